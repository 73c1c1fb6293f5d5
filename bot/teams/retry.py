"""Teams' retry rules for every outgoing call: 412, 429, 502, 503, 504 and network errors.

msrest does not retry a POST on 429 (PLATFORM.md), so replies, card edits and proactive messages
all go through `with_teams_retry`, which honours Retry-After and otherwise backs off with jitter.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from botbuilder.schema import ErrorResponseException
from requests.exceptions import RequestException

from bot.notifications import NotificationError

RETRYABLE_STATUSES = frozenset({412, 429, 502, 503, 504})
MAX_ATTEMPTS = 5
MAX_RETRY_AFTER_SECONDS = 60.0

_T = TypeVar("_T")


async def with_teams_retry(
    call: Callable[[], Awaitable[_T]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    base_delay: float = 1.0,
    rng: random.Random | None = None,
) -> _T:
    """Run `call`, retrying what Teams says is transient; NotificationError when it never succeeds."""
    jitter = rng or random.Random()  # noqa: S311  # nosec B311
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await call()
        except ErrorResponseException as error:
            status = getattr(error.response, "status_code", None)
            if status not in RETRYABLE_STATUSES or attempt == MAX_ATTEMPTS:
                raise NotificationError(f"Teams answered {status}") from error
            await sleep(_delay(attempt, error.response.headers.get("Retry-After"), base_delay, jitter))
        except RequestException as error:
            if attempt == MAX_ATTEMPTS:
                raise NotificationError("Teams connector unreachable") from error
            await sleep(_delay(attempt, None, base_delay, jitter))
    raise NotificationError("unreachable")  # the loop always returns or raises


def _delay(attempt: int, retry_after: str | None, base_delay: float, rng: random.Random) -> float:
    if retry_after is not None:
        try:
            return min(MAX_RETRY_AFTER_SECONDS, max(0.0, float(retry_after)))
        except ValueError:
            pass
    step: float = base_delay * 2 ** (attempt - 1)
    return step * rng.uniform(0.5, 1.0)
