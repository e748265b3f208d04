"""Before the first sample: can this teacher work at all?

A wrong base URL, a rejected key or an unknown model fails every sample alike; without this
check each sample would go through all its retries before the run said anything. One cheap
request settles it: the models list (a model listed there needs nothing more), else a
1-token completion, whose answer says whether the model is served. Only what cannot work
stops the run; a teacher that is busy (429) or failing now (5xx) is left to the run's retries.

Failures are ``TeacherError``s whose message is the one line to show; none carries the key,
and the URL is shown without credentials.
"""

from __future__ import annotations

from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.errors import (
    TeacherAuthError,
    TeacherError,
    TeacherLimitReached,
    TeacherRejected,
)
from geodistil.redact import redact_url
from geodistil.teacher import TeacherClient

PREFLIGHT_TIMEOUT_S = 8.0  # the check must answer well within the 10 s a user waits for a verdict
_OUTAGES = ("connection_refused", "dns", "connection")


def _listed(listing: dict | None, model: str) -> bool:
    """Whether the models list names ``model`` (Gemini lists its ids as ``models/<name>``)."""
    entries = (listing or {}).get("data") or []
    ids = {str(m.get("id")) for m in entries if isinstance(m, dict)}
    return model in ids or f"models/{model}" in ids


async def preflight(config: TeacherConfig, api_key: str | None = None) -> None:
    """Raise ``TeacherError`` with one line when the URL, the key or the model cannot work."""
    checked = config.model_copy(update={"max_retries": 0, "timeout_s": min(config.timeout_s, PREFLIGHT_TIMEOUT_S)})
    where = redact_url(config.resolved_base_url())
    async with TeacherClient(checked, max_connections=2, api_key=api_key) as client:
        try:
            listing: dict | None = await client.models_listing()
        except TeacherAuthError as exc:
            raise _bad_key(where, config, exc) from None
        except TeacherRejected:
            listing = None  # no models list here (or the URL is wrong): the completion tells
        except TeacherError as exc:
            raise _unreachable(where, exc) from None
        if _listed(listing, config.model):
            return
        try:
            await client.complete([{"role": "user", "content": "Say OK."}], GenerationConfig(max_tokens=1))
        except TeacherAuthError as exc:
            raise _bad_key(where, config, exc) from None
        except TeacherLimitReached:
            return  # the model answered, with a limit: it exists
        except TeacherRejected as exc:
            if exc.status == 404:
                raise _not_found(where, config.model, listing, exc) from None
            # any other 4xx is about the request, not the teacher: the run's own checks judge those
        except TeacherError as exc:
            if exc.kind in _OUTAGES:
                raise _unreachable(where, exc) from None
            # 429, 5xx, a timeout: the teacher is there and busy; the run's retries absorb that


def _bad_key(where: str, config: TeacherConfig, exc: TeacherAuthError) -> TeacherAuthError:
    source = f"the Prefect Secret {config.api_key_secret}" if config.api_key_secret else f"${config.api_key_env}"
    return TeacherAuthError(f"the teacher at {where} rejected the API key from {source} "
                            f"(HTTP {exc.status}); set the right key and run the same command", "auth", exc.status)


def _unreachable(where: str, exc: TeacherError) -> TeacherError:
    what = exc.kind.replace("_", " ")
    return TeacherError(f"teacher unreachable at {where}: {what}; check --base-url and that the server is up",
                        kind=exc.kind)


def _not_found(where: str, model: str, listing: dict | None, exc: TeacherRejected) -> TeacherRejected:
    if listing is None and "model" not in str(exc).lower():
        return TeacherRejected(f"nothing at {where} answers as an OpenAI-compatible server (HTTP 404 to /models and "
                               f"/chat/completions): check --base-url (it usually ends in /v1)", "http_404", 404)
    served = [str(m.get("id")) for m in (listing or {}).get("data") or [] if isinstance(m, dict)]
    hint = f"; it serves: {', '.join(served[:10])}" if served else ""
    return TeacherRejected(f"the teacher at {where} does not serve the model {model!r} (HTTP 404){hint}",
                           "model_not_found", 404)
