from geodistil.cli import main

main()
