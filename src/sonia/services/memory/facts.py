"""What the memory service remembers on its own: the facts a user states about themselves.

A conversation is stored as turns, but turns are not recalled across sessions;
memories are. So when a user message is stored, the statements in it that are
worth recalling later become memories of kind `fact`:

  * an explicit request: "remember (that) X", "note (that) X", "don't forget X"
    -> X;
  * a first-person statement that is not a question: a sentence starting with
    my, I, I'm, I've, we, our ("My cat is called Tom.") -> the sentence.

Questions, greetings and everything else are left as turns only. The rule is
deliberately narrow and predictable (no model involved), so what was stored is
always explainable: every chat answer lists it under `memory.stored`.

A fact already remembered word for word is not stored twice: its idempotency
key is derived from its text, so the ledger does not grow when a user repeats
themselves (and the soak's identical chats keep the index steady). A fact whose
earlier copy was archived is remembered afresh: the archived row keeps its
content but gives up the key.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sonia.services.memory import store
from sonia.services.memory.store import Clock, Memory, Turn, utc_now

FACT_KIND = "fact"
MAX_FACT_CHARS = 2_000
MAX_FACTS_PER_MESSAGE = 8

_REMEMBER = re.compile(
    r"^\s*(?:please\s+)?(?:remember|note|don't forget|do not forget)(?:\s+that)?[\s:,]+"
    r"(?P<fact>.+)$", re.IGNORECASE | re.DOTALL)
_FIRST_PERSON = re.compile(r"^(?:my|i|i'm|im|i've|ive|we|we're|our|mine)\b", re.IGNORECASE)
_QUESTION_START = re.compile(
    r"^(?:what|whats|what's|where|who|when|which|why|how|do|does|did|is|are|am|can|could|"
    r"would|will|should|have|has|was|were)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!;,: ").strip()


def facts_in(message: str) -> list[str]:
    """The facts worth remembering in one user message, in order, without repeats."""
    found: list[str] = []
    remember = _REMEMBER.match(message)
    candidates = [remember.group("fact")] if remember else [
        s for s in _SENTENCE.findall(message)
        if _FIRST_PERSON.match(s.strip()) and not s.strip().endswith("?")
        and not _QUESTION_START.match(s.strip())
    ]
    for candidate in candidates:
        fact = _clean(candidate)
        if fact and not fact.endswith("?") and len(fact) <= MAX_FACT_CHARS and fact not in found:
            found.append(fact)
        if len(found) == MAX_FACTS_PER_MESSAGE:
            break
    return found


def fact_key(fact: str) -> str:
    """The idempotency key of a fact: the same words give the same key."""
    return "fact:" + hashlib.sha256(fact.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Remembered:
    """A fact the ledger holds after a message: `new` is False when it was known already."""

    memory: Memory
    new: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.memory.to_dict(), "new": self.new}


def remember_facts(conn: sqlite3.Connection, message: str, *, owner: str,
                   session_id: str | None = None, clock: Clock = utc_now) -> list[Remembered]:
    """Store the facts of `message` (see `facts_in`) as memories of `owner`; safe inside a
    larger transaction."""
    remembered: list[Remembered] = []
    store.check_owner(owner)
    for fact in facts_in(message):
        key = fact_key(fact)
        conn.execute("UPDATE memories SET idempotency_key = NULL"
                     " WHERE idempotency_key = ? AND archived_at IS NOT NULL",
                     (store.scoped_idempotency_key(owner, key),))
        before = conn.total_changes
        memory = store.add_memory(conn, fact, owner=owner, kind=FACT_KIND,
                                  session_id=session_id,
                                  idempotency_key=key, metadata={"source": "user statement"},
                                  clock=clock)
        remembered.append(Remembered(memory, new=conn.total_changes > before))
    return remembered


def store_exchange(conn: sqlite3.Connection, session_id: str, user: str, assistant: str | None,
                   *, owner: str, metadata: Mapping[str, Any] | None = None,
                   remember: bool = True,
                   clock: Clock = utc_now) -> tuple[Turn, Turn | None, list[Remembered]]:
    """A user message, its reply and the facts of the message: one transaction, all or none.

    `assistant` is None (or blank) when no reply was given (interrupted before its
    first word): the user's turn is still part of the conversation."""
    asked = store.add_turn(conn, session_id, "user", user, metadata=metadata, clock=clock)
    answered = (store.add_turn(conn, session_id, "assistant", assistant, metadata=metadata,
                               clock=clock) if assistant and assistant.strip() else None)
    facts = (remember_facts(conn, user, owner=owner, session_id=session_id, clock=clock)
             if remember else [])
    return asked, answered, facts


__all__ = ["FACT_KIND", "Remembered", "fact_key", "facts_in", "remember_facts",
           "store_exchange"]
