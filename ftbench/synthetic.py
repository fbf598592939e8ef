"""Seeded generators for the CPU tasks on SmolLM2-135M: a classification and a structured-output task.

* ``tickets`` — route a short customer message to one of four queues (billing, technical,
  shipping, account). Each message mixes a cue phrase of its class with neutral filler and, in
  a quarter of the messages, a distractor word of another class, so keyword matching alone
  is not enough. Scored by macro-F1 over the four labels.
* ``orders`` — extract ``{"id", "name", "city", "qty"}`` from a one-line order note written in
  one of several phrasings. Scored per field (``json_fields``): malformed JSON scores 0.

Both are deterministic given their seed (``random.Random``, no global state), and split into
disjoint train / eval sets.
"""
from __future__ import annotations

import json
import random

LABELS = ("billing", "technical", "shipping", "account")
CUES = {
    "billing": ["I was charged twice", "the invoice amount is wrong", "please refund my payment",
                "my card was billed after I cancelled", "the price on my receipt is too high",
                "I need a copy of my invoice"],
    "technical": ["the app crashes when I open it", "I get an error 500 on login", "the page will not load",
                  "the export button does nothing", "sync stopped working after the update",
                  "the screen freezes on startup"],
    "shipping": ["my parcel has not arrived", "the tracking number shows nothing", "the box came damaged",
                 "delivery is two weeks late", "the courier left it at the wrong door",
                 "can you ship to a different address"],
    "account": ["I cannot reset my password", "please delete my account", "I want to change my email address",
                "my username is locked", "how do I add a second user", "I forgot which email I signed up with"],
}
DISTRACT = {"billing": "payment", "technical": "error", "shipping": "delivery", "account": "password"}
FILLER = ["Hello,", "Hi team,", "Good morning.", "Quick question:", "Sorry to bother you.", ""]
TAIL = ["Thanks.", "Please help.", "Regards, Sam", "This is urgent.", "", "Cheers"]

NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jonas", "Keiko", "Lena"]
CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Quito", "Porto", "Accra", "Hanoi", "Cork"]
PHRASINGS = [
    "Order {id}: {qty} units for {name}, ship to {city}.",
    "{name} from {city} ordered {qty} items (order #{id}).",
    "Ship {qty} to {city} for {name}; ref {id}.",
    "#{id} / {city} / {name} / qty {qty}",
    "Please send {name} in {city} {qty} pieces, order number {id}.",
]


def ticket_prompt(text: str) -> str:
    return f"Route the ticket to billing, technical, shipping or account.\nTicket: {text}\nQueue:"


def _ticket(rng: random.Random) -> dict:
    label = rng.choice(LABELS)
    parts = [rng.choice(FILLER), rng.choice(CUES[label]) + "."]
    if rng.random() < 0.25:  # a word of another class, to punish keyword matching
        other = rng.choice([x for x in LABELS if x != label])
        parts.append(f"(not a {DISTRACT[other]} issue)")
    parts.append(rng.choice(TAIL))
    text = " ".join(p for p in parts if p)
    return {"prompt": ticket_prompt(text), "completion": f" {label}", "label": label, "text": text}


def _unique_rows(make, rng: random.Random, n: int) -> list[dict]:
    """``n`` rows from ``make(rng)`` with distinct texts (so train and eval never share an example)."""
    rows, seen = [], set()
    while len(rows) < n:
        r = make(rng)
        if r["text"] not in seen:
            seen.add(r["text"])
            rows.append(r)
    return rows


def tickets(seed: int = 0, n_train: int = 800, n_eval: int = 200, n_test: int = 200) -> dict[str, list[dict]]:
    rows = _unique_rows(_ticket, random.Random(f"tickets:{seed}"), n_train + n_eval + n_test)
    held = [dict(r, completion=r["label"]) for r in rows[n_train:]]  # references without the space
    return {"train": rows[:n_train], "eval": held[:n_eval], "test": held[n_eval:]}


def order_prompt(text: str) -> str:
    return f'Extract the order as JSON with keys id, name, city, qty.\nNote: {text}\nJSON:'


def _order(rng: random.Random) -> dict:
    fields = {"id": str(rng.randint(1000, 9999)), "name": rng.choice(NAMES), "city": rng.choice(CITIES),
              "qty": rng.randint(1, 50)}
    text = rng.choice(PHRASINGS).format(**fields)
    target = json.dumps(fields, separators=(",", ":"))
    return {"prompt": order_prompt(text), "completion": f" {target}", "text": text, "fields": fields}


def orders(seed: int = 0, n_train: int = 800, n_eval: int = 200, n_test: int = 200) -> dict[str, list[dict]]:
    rows = _unique_rows(_order, random.Random(f"orders:{seed}"), n_train + n_eval + n_test)
    held = [dict(r, completion=r["completion"].strip()) for r in rows[n_train:]]
    return {"train": rows[:n_train], "eval": held[:n_eval], "test": held[n_eval:]}
