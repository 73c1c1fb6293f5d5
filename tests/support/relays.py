"""A mail transport for tests and benchmarks that only counts: the mail is taken at once."""

from __future__ import annotations

from bot.delivery.mail_message import OutgoingMail


class CountingRelay:
    """Takes every mail at once and counts them (`sent`)."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: OutgoingMail) -> None:
        self.sent += 1

    async def check(self) -> str:
        return "counting relay"
