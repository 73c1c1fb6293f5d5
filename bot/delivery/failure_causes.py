"""Why a mail or a Teams message did not go out, as one fixed word for the metrics (`bot.core.metrics`).

A metric attribute may hold only a word from a fixed list: the error's own text can name an address
or a server's answer, and stays in the log.
"""

from __future__ import annotations

from bot.delivery.chat_messages import ChatSendError
from bot.delivery.mail_transport import MailDeliveryError


def mail_failure_cause(error: MailDeliveryError) -> str:
    """A fixed word for why a mail did not go out (the reason text itself is for the log)."""
    if error.reason.startswith("protocol ") and "not in force" in error.reason:
        return "protocol_ended"
    if error.reason == "no answer within the lease" or "in time" in error.reason:
        return "timeout"
    if error.retry_after is not None:
        return "throttled"
    return "transient" if error.transient else "permanent"


def teams_failure_cause(error: ChatSendError) -> str:
    """A fixed word for why Teams did not take a message."""
    if error.status is None:
        return "timeout" if error.reason == "no answer within the lease" else (
            "unexpected" if error.reason == "unexpected error" else "unreachable")
    if error.status == 429:
        return "throttled"
    if error.status == 401:
        return "unauthorized"
    if error.status >= 500:
        return "server_error"
    return "refused"
