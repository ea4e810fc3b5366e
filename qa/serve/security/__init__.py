"""The app's security middleware, each an ASGI class added by `create_app`:

- `SecurityHeaders`: a Content-Security-Policy (`frame-ancestors` limited to this origin and
  QA_EMBED_ORIGINS) and a few hardening headers on every response;
- `AccessControl`: optional sign-in (QA_AUTH_HEADER from an SSO proxy, QA_USERS_FILE for HTTP
  Basic auth);
- `RateLimit`: an optional per-IP limit on questions;
- `ClosedRoutes`: Gradio's upload, file and other unused routes closed (404);
- `BodyLimit`: bodies of at most QA_MAX_BODY_BYTES, checked before anything parses them;
- `GradioArguments`: the arguments of Gradio API calls checked before Gradio runs them;
- `PublicRoot`: the page's links from QA_PUBLIC_URL or QA_ROOT_PATH, never from a request's
  Host header.

Grouped by what they guard: `headers` (what every response tells the browser), `access` (who may
reach what, and how often) and `bodies` (what a request may carry).
"""

from qa.serve.security.access import (
    CLOSED_PREFIXES,
    MCP_PATHS,
    OPEN_PATHS,
    AccessControl,
    ClosedRoutes,
    RateLimit,
    is_closed,
    read_users,
)
from qa.serve.security.bodies import BODY_READ_SECONDS, BodyLimit, GradioArguments
from qa.serve.security.headers import (
    PUBLIC_ROOT_KEY,
    PublicRoot,
    SecurityHeaders,
    content_security_policy,
    install_public_root,
)

__all__ = [
    "BODY_READ_SECONDS",
    "CLOSED_PREFIXES",
    "MCP_PATHS",
    "OPEN_PATHS",
    "PUBLIC_ROOT_KEY",
    "AccessControl",
    "BodyLimit",
    "ClosedRoutes",
    "GradioArguments",
    "PublicRoot",
    "RateLimit",
    "SecurityHeaders",
    "content_security_policy",
    "install_public_root",
    "is_closed",
    "read_users",
]
