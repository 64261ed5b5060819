"""What mapping alone costs a sync, per record: the bench's contacts (``bench/sync.py``'s
HubSpot-shaped records, parsed as the client parses them) through the sync's own mapping
(field paths, the email rules, the change hash, which record holds each email), nothing
fetched, nothing written.

    .venv/bin/python bench/mapping.py [--contacts N] [--rounds R]

Prints the best of ``R`` rounds in microseconds per record: the figure that, added to the
database floor (``bench/dbfloor.py``), bounds any sync of this shape on this machine (see
the README's Performance section).
"""

from __future__ import annotations

import argparse
import gc
import time

from sync import FIELD_MAPPING, PAGE_SIZE, contact

from isthmus import jsonread, jsonwrite
from isthmus.connectors.types import Page, Request
from isthmus.domain.contact_mapping import EmailClaims, FieldMapping
from isthmus.sync.runner import _Mapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    request = Request("GET", "http://127.0.0.1/contacts", [], {}, None)
    pages = []
    for start in range(0, args.contacts, PAGE_SIZE):
        records = [contact(i, 0) for i in range(start, start + PAGE_SIZE)]
        body = jsonwrite.dumps({"results": records})
        pages.append(Page(len(pages) + 1, jsonread.loads(body)["results"], None, request=request))
    mapping = FieldMapping.build("api_endpoint", FIELD_MAPPING)
    best = float("inf")
    for _ in range(args.rounds):
        mapper = _Mapper(mapping, None, EmailClaims())
        gc.collect()
        started = time.perf_counter()
        mapped = sum(len(part.mapped) for page in pages for part in mapper.parts(page, 0))
        best = min(best, time.perf_counter() - started)
        assert mapped == args.contacts, mapped
    print(f"mapping: {best / args.contacts * 1e6:.2f} us per record (best of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
