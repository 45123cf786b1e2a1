"""Writes ``demo_records.txt``: 240 synthetic records that look like what must not leak from a federated
client (names, birth years, addresses, phone numbers, diagnoses, salaries). Every record is made up here
from small word lists with a seeded generator; none describes a real person.

    python src/fedleak/data/corpora/make_demo_records.py   # rewrites demo_records.txt next to this file

One record per line; the first word is the record type (the class a text classifier learns).
"""

from __future__ import annotations

import random
from pathlib import Path

FIRST = (
    "Maria",
    "Jonas",
    "Aiko",
    "Peter",
    "Lena",
    "Omar",
    "Sofia",
    "Liam",
    "Nora",
    "Ravi",
    "Clara",
    "Tomas",
    "Ines",
    "Felix",
    "Hana",
    "Mateo",
    "Greta",
    "Yusuf",
    "Elena",
    "Bruno",
    "Mira",
    "Kofi",
    "Alma",
    "Viktor",
)
LAST = (
    "Keller",
    "Okafor",
    "Tanaka",
    "Novak",
    "Berg",
    "Haddad",
    "Russo",
    "Walsh",
    "Lindqvist",
    "Sharma",
    "Moreau",
    "Dvorak",
    "Costa",
    "Brandt",
    "Sato",
    "Alvarez",
    "Engel",
    "Demir",
    "Petrova",
    "Fischer",
)
STREET = (
    "Elm",
    "Oak",
    "Birch",
    "Mill",
    "Harbor",
    "Station",
    "Chapel",
    "Willow",
    "Cedar",
    "Meadow",
    "Quarry",
    "Linden",
)
KIND = ("Road", "Street", "Lane", "Avenue", "Way")
CITY = ("Springfield", "Riverton", "Lakeside", "Fairview", "Brookfield", "Northgate", "Ashford", "Greenville")
DIAGNOSIS = (
    "type 2 diabetes",
    "asthma",
    "hypertension",
    "major depression",
    "HIV positive",
    "migraine",
    "epilepsy",
    "breast cancer",
    "hepatitis C",
    "bipolar disorder",
    "chronic kidney disease",
)
COMPANY = ("Acme Logistics", "Northwind Bank", "Bluebird Clinic", "Vertex Labs", "Harbor Foods")
MONTH = ("January", "March", "May", "July", "September", "November")


def record(kind: str, r: random.Random) -> str:
    first, last = r.choice(FIRST), r.choice(LAST)
    street = f"{r.randint(1, 99)} {r.choice(STREET)} {r.choice(KIND)} {r.choice(CITY)}"
    phone = f"555 {r.randint(0, 9999):04d}"
    if kind == "patient":
        return (
            f"patient {first} {last} born {r.randint(1940, 2005)} lives at {street} phone {phone} "
            f"diagnosis {r.choice(DIAGNOSIS)}"
        )
    if kind == "customer":
        card = f"{r.randint(0, 9999):04d}"
        return (
            f"customer {first} {last} card ending {card} lives at {street} phone {phone} "
            f"owes {r.randint(100, 9999)} dollars"
        )
    if kind == "employee":
        return (
            f"employee {first} {last} id {r.randint(10000, 99999)} works at {r.choice(COMPANY)} "
            f"salary {r.randint(30, 150)} thousand phone {phone}"
        )
    return (
        f"tenant {first} {last} flat {r.randint(1, 40)} at {street} rent {r.randint(500, 2500)} "
        f"due {r.randint(1, 28)} {r.choice(MONTH)}"
    )


def records(n: int = 240, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    kinds = ("patient", "customer", "employee", "tenant")
    return [record(kinds[r.randrange(len(kinds))], r) for _ in range(n)]


if __name__ == "__main__":
    out = Path(__file__).with_name("demo_records.txt")
    out.write_text("\n".join(records()) + "\n")
    print(f"wrote {out}")
