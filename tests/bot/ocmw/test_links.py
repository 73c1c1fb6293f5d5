"""Pairing codes and OCMW links, on SQLite and PostgreSQL: a code works once (also when two instances
use it at the same moment), for 24 hours, only for its protocol; a new link replaces the old one."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from bot.ocmw.links import CODE_LIFETIME, OcmwLink, OcmwLinks, display_code, normalise_code
from bot.storage.database import Database
from tests.support.databases import another_engine
from tests.support.stored_referrals import NOW, conversation_ref

PROTOCOL = "OR-KG-NOW-OCMW-SGW-2026"
CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"
LINK = OcmwLink(protocol_id=PROTOCOL, conversation_id=CHANNEL, conversation_ref=conversation_ref(CHANNEL),
                linked_by_id="aad-ocmw-1", linked_by="Olga Maatschappelijk", linked_at=NOW)


async def test_a_code_links_its_protocol_once(database: Database) -> None:
    links = OcmwLinks(database)
    code = await links.new_code(PROTOCOL, NOW)
    assert len(code) == 9 and code[4] == "-" and display_code(normalise_code(code)) == code
    stored = await database.fetch_all("SELECT * FROM pairing_codes")
    assert normalise_code(code) not in str([dict(row) for row in stored]), "only its hash is kept"
    typed = f" {code.lower().replace('-', ' ')} "  # as a worker might type it
    assert await links.protocol_for_code(typed, NOW) == PROTOCOL
    assert not await links.link(code, dataclasses.replace(LINK, protocol_id="OR-OTHER"), NOW), "another protocol's"
    assert await links.link(typed, LINK, NOW)
    assert await links.for_protocol(PROTOCOL) == LINK
    assert await links.protocol_for_code(code, NOW) is None and not await links.link(code, LINK, NOW), "used up"
    assert await links.protocol_for_code("ABCD-EFGH", NOW) is None


async def test_a_code_expires_after_24_hours(database: Database) -> None:
    links = OcmwLinks(database)
    code = await links.new_code(PROTOCOL, NOW)
    assert dt.timedelta(hours=24) == CODE_LIFETIME
    assert await links.protocol_for_code(code, NOW + CODE_LIFETIME - dt.timedelta(seconds=1)) == PROTOCOL
    assert await links.protocol_for_code(code, NOW + CODE_LIFETIME) is None
    assert not await links.link(code, LINK, NOW + CODE_LIFETIME)
    assert await links.for_protocol(PROTOCOL) is None


async def test_two_instances_using_one_code_at_once_link_once(database: Database) -> None:
    """The same code typed in two channels, each message handled by another instance: one link, the other refused."""
    engines = (OcmwLinks(database), OcmwLinks(another_engine(database)))
    for attempt in range(5):
        code = await engines[0].new_code(PROTOCOL, NOW)
        targets = [dataclasses.replace(LINK, conversation_id=f"19:channel-{attempt}-{number}@thread.tacv2")
                   for number in range(2)]
        linked = await asyncio.gather(*(links.link(code, target, NOW) for links, target in zip(engines, targets,
                                                                                              strict=True)))
        assert sorted(linked) == [False, True], attempt
        winner = targets[linked.index(True)]
        assert await engines[1].for_protocol(PROTOCOL) == winner


async def test_a_new_link_replaces_the_old_one_and_a_channel_may_serve_several_protocols(database: Database) -> None:
    links = OcmwLinks(database)
    assert await links.link(await links.new_code(PROTOCOL, NOW), LINK, NOW)
    elsewhere = dataclasses.replace(LINK, conversation_id="19:elders@thread.tacv2", linked_by="Omar",
                                    linked_at=NOW + dt.timedelta(hours=1))
    assert await links.link(await links.new_code(PROTOCOL, NOW), elsewhere, NOW + dt.timedelta(hours=1))
    assert await links.for_protocol(PROTOCOL) == elsewhere
    assert await links.for_conversation(CHANNEL) == []

    other = dataclasses.replace(LINK, protocol_id="OR-AAA-FIRST", conversation_id="19:elders@thread.tacv2")
    assert await links.link(await links.new_code(other.protocol_id, NOW), other, NOW)
    found = await links.for_conversation("19:elders@thread.tacv2;messageid=1700000000001")  # from a thread
    assert found == [other, elsewhere], "every protocol the channel serves, by protocol id"
    assert await links.for_protocol("OR-NONE") is None
