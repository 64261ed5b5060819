"""One try of an outbound call, as the client tracks it: what was sent, what came back, and
how its URL may be shown (the auth's query values masked as well as ``redact_url``'s)."""

from __future__ import annotations

from dataclasses import dataclass, field

from yarl import URL

from isthmus.connectors.types import Request
from isthmus.errors import OutboundError
from isthmus.http import OutboundResponse, redact_url
from isthmus.http.redact import MASK


@dataclass
class Try:
    """One try of a call: what was sent, what came of it, which query names are secrets."""

    request: Request
    secret_names: set[str] = field(default_factory=set)
    out: OutboundResponse | None = None
    error: OutboundError | None = None
    elapsed: float = 0.0
    _shown: tuple[OutboundResponse, str] | None = field(default=None, init=False, repr=False)

    def sent_url(self) -> URL:
        if self.out is not None:
            return URL(self.out.url)
        return URL(self.request.url).extend_query(self.request.params)

    def shown_url(self) -> str:
        """The URL as logs and errors may show it: ``redact_url`` plus the auth's values.
        Once the response is in, the answer is kept (the response and the log both ask)."""
        if self.out is not None and self._shown is not None and self._shown[0] is self.out:
            return self._shown[1]
        shown = self._shown_now()
        if self.out is not None:
            self._shown = (self.out, shown)
        return shown

    def _shown_now(self) -> str:
        sent = self.sent_url()
        if self.secret_names and sent.query_string:
            sent = sent.with_query(
                [(k, MASK if k in self.secret_names else v) for k, v in sent.query.items()]
            )
        return redact_url(sent)

    def scrub(self, error: OutboundError) -> None:
        """Show the error's URL (in its message too) as :meth:`shown_url` does."""
        plain, shown = redact_url(self.sent_url()), self.shown_url()
        if error.url is None or error.url == plain:
            error.url = shown
        if plain != shown and plain in error.message:
            error.message = error.message.replace(plain, shown)
            error.args = (error.message, *error.args[1:])


__all__ = ["Try"]
