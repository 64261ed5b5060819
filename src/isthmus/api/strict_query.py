"""Query parameters a route does not declare are refused.

Left alone, an unknown parameter is ignored: a mistyped filter (``search=`` for ``q=``,
``integration_id=`` for ``integrationId=``) answers as if there were no filter, and a list
or an export silently holds everything. Every route behind an API key answers 422 instead,
naming each unknown parameter and the ones the route takes, once the key is accepted (a
request without one is a 401 first). The OAuth callback takes no key, and whatever a
provider adds to its redirect.
"""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request

from isthmus.errors import FieldError, InvalidInput


def refuse_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = query_names(route.dependant)
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        why = f"is not a query parameter of this route (it takes: {takes})"
        raise InvalidInput(
            f"unknown query parameters: {', '.join(unknown)}",
            [FieldError(name, why) for name in unknown],
        )


def query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route declares, its dependencies' included, by the names a
    client sends (aliases)."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return names
