"""A Bot Framework connector stand-in in a process of its own: `python -m benchmarks.connector_standin PORT`.

It answers like tests/support/connector.py (every POST/PUT `{"id": "activity-N"}`, a member object
for `GET .../members/{id}`) but records nothing except counts: the benchmark measures the bot's
CPU, so neither this process nor the load generator may run inside the bot's process or share its
CPU. `GET /_bench/stats` gives the counts, so the harness can check that a build really replied
(a botbuilder bot answers 201 even when its turn failed). Standalone on purpose: it runs next to
any build and imports nothing from the bot.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

from aiohttp import web

STATS_PATH = "/_bench/stats"


def make_app() -> web.Application:
    """The stand-in's routes; counts per HTTP method."""
    counts: Counter[str] = Counter()
    ids = itertools.count(1)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(dict(counts))

    async def handle(request: web.Request) -> web.Response:
        if request.can_read_body:
            await request.read()
        counts[request.method] += 1
        if request.method == "GET" and "/members/" in request.path:
            member = request.path.rsplit("/", 1)[-1]
            return web.json_response({"id": member, "name": "Member", "aadObjectId": member})
        activity_id = f"activity-{next(ids)}"
        # POST /v3/conversations (a new channel thread) is also answered with the activity id.
        return web.json_response({"id": activity_id, "activityId": activity_id})

    app = web.Application()
    app.router.add_get(STATS_PATH, stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    arguments = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=arguments.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
