#!/usr/bin/env python
"""Latency of a full offline turn: ROUTE → PLAN → TOOL_LOOP → DRAFT → GUARD → RESPOND.

    .venv/bin/python bench/turn_latency.py [--messages 1000] [--home DIR]
    .venv/bin/python bench/turn_latency.py --kb-chunks 10000 [--seed 5]

Rules planner, demo shop, SQLite on disk (a fresh temp directory unless --home), the
demo knowledge base when available. 1,000 varied messages: Bitext utterances of every intent
with demo order IDs swapped in, everyday phrasings, follow-ups to clarifying questions,
out-of-scope questions and greetings. Prints one JSON object with p50/p95/p99, the count of
each final state (`states`) and the mean and p95 of each step's span and of each tool call,
read back from the turns' traces (`steps_ms`, `tools_ms`).

With `--kb-chunks N` it prints one JSON line per stage instead: `baseline` (the demo KB
alone, 19 articles), `kb_build` (a fresh home whose KB folder holds the demo articles, the
StackFAQ threads of ../shared/data/retrieval as community articles, and generated
help-centre articles up to about N chunks, indexed by the real `KnowledgeBase.reload` with
its default encoder and bulk workers: the seconds and the chunk count reached), `large`
(the same messages against it) and `ratio` (large over baseline). Both runs share one
process and one encoder cache; the load average is printed with each run, since the machine
may be busy.

The file is long because of the generated help centre's sentence pools (`TOPICS`); they
live here so that the bench stays one file with no corpus to ship.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.brain.intents import load_examples  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.contracts import Channel, MessageEnvelope  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402

ORDERS = ["A-1001", "A-1017", "A-1042", "A-1055", "A-1063", "A-1077", "A-1088", "A-1093", "A-1101", "A-1120"]
STACKFAQ = ROOT.parent / "shared/data/retrieval/stackfaq_corpus.jsonl"  # CC BY-SA (StackExchange)

# --- a generated help centre -------------------------------------------------------------
# Other shops' articles: brands × products × topics, each topic a few sections whose sentences
# are drawn from pools and filled with the product's own parts, so BM25 and the vectors see
# a varied vocabulary. Every article is short enough to be one chunk (kb_loader/chunker.py).

BRANDS = ("Kestrel Norrland Albury Fennick Marlow Quillon Tidewater Brackley Osric Halden Vireo Carrow "
          "Lumen Petrel Ashgrove Dunmore Solent Wrenfield Caspian Orwell Juniper Harrow Selkie Tamsin "
          "Brisa Calder Ostara Penrose Rowan Ulla Corvid Elstree Fulmar Gannet Isolde Kittiwake").split()
PRODUCTS = [  # (product, plural, parts, what looking after it means)
    ("espresso machine", "espresso machines", ["portafilter", "steam wand", "water tank", "drip tray"], "descaling"),
    ("road bike", "road bikes", ["derailleur", "brake caliper", "chain", "saddle"], "checking the tyre pressure"),
    ("hiking boot", "hiking boots", ["sole", "lace hooks", "insole", "gore-tex lining"], "waxing the leather"),
    ("smart thermostat", "smart thermostats", ["wall plate", "temperature sensor", "display", "hub"], "firmware updates"),
    ("sofa", "sofas", ["cushion covers", "legs", "frame", "recliner mechanism"], "vacuuming the upholstery"),
    ("electric toothbrush", "electric toothbrushes", ["brush head", "charging base", "battery", "handle"], "rinsing the head"),
    ("tent", "tents", ["poles", "flysheet", "groundsheet", "guy ropes"], "drying it before storage"),
    ("washing machine", "washing machines", ["door seal", "detergent drawer", "drain pump", "drum"], "cleaning the filter"),
    ("laptop", "laptops", ["keyboard", "battery", "charger", "hinge"], "keeping the vents clear"),
    ("running shoe", "running shoes", ["midsole", "heel counter", "outsole", "tongue"], "air-drying them"),
    ("office chair", "office chairs", ["gas lift", "armrests", "castors", "lumbar support"], "tightening the bolts"),
    ("blender", "blenders", ["jug", "blade assembly", "motor base", "lid"], "washing the blades"),
    ("mattress", "mattresses", ["cover", "foam core", "pocket springs", "zip"], "rotating it every season"),
    ("pram", "prams", ["canopy", "wheels", "brake", "carrycot"], "oiling the wheel axles"),
    ("air purifier", "air purifiers", ["HEPA filter", "pre-filter", "fan", "air quality sensor"], "replacing the filter"),
    ("kayak", "kayaks", ["paddle", "spray deck", "rudder", "seat"], "rinsing off salt water"),
    ("wristwatch", "wristwatches", ["strap", "crown", "crystal", "movement"], "keeping it away from magnets"),
    ("vacuum cleaner", "vacuum cleaners", ["dust bin", "brush roll", "hose", "cyclone filter"], "emptying the bin"),
    ("winter jacket", "winter jackets", ["zip", "down filling", "hood", "cuffs"], "washing it on a cold cycle"),
    ("headphones", "headphones", ["ear cushions", "headband", "charging case", "cable"], "cleaning the ear tips"),
    ("dining table", "dining tables", ["tabletop", "extension leaf", "legs", "fixings"], "oiling the wood"),
    ("camera", "cameras", ["lens mount", "sensor", "battery grip", "viewfinder"], "cleaning the sensor"),
    ("garden hose", "garden hoses", ["spray gun", "hose reel", "connector", "tap adaptor"], "draining it before frost"),
    ("yoga mat", "yoga mats", ["carry strap", "grip surface", "foam layer", "bag"], "wiping it after use"),
    ("drill", "drills", ["chuck", "battery pack", "charger", "torque clutch"], "charging the battery fully"),
    ("kettle", "kettles", ["limescale filter", "base", "lid hinge", "element"], "descaling"),
    ("guitar", "guitars", ["strings", "tuning pegs", "bridge", "truss rod"], "keeping the humidity steady"),
    ("cot", "cots", ["mattress base", "side rails", "teething rail", "castors"], "checking the screws"),
    ("e-scooter", "e-scooters", ["deck", "throttle", "folding latch", "motor"], "charging after every ride"),
    ("saucepan set", "saucepan sets", ["handles", "non-stick coating", "glass lids", "base"], "washing by hand"),
    ("lawn mower", "lawn mowers", ["blade", "grass box", "spark plug", "cutting height lever"], "sharpening the blade"),
    ("desk lamp", "desk lamps", ["LED module", "arm spring", "dimmer", "base weight"], "dusting the shade"),
    ("suitcase", "suitcases", ["telescopic handle", "spinner wheels", "TSA lock", "zip puller"], "storing it empty"),
    ("smartwatch", "smartwatches", ["strap", "heart-rate sensor", "charging puck", "screen"], "updating the app"),
    ("rug", "rugs", ["fringe", "backing", "pile", "underlay"], "turning it twice a year"),
    ("sewing machine", "sewing machines", ["bobbin case", "presser foot", "needle plate", "foot pedal"], "oiling the hook"),
    ("paddleboard", "paddleboards", ["fin", "pump", "leash", "valve"], "rinsing and drying the board"),
    ("projector", "projectors", ["lamp", "remote", "lens cover", "ceiling mount"], "cleaning the air filter"),
    ("bookcase", "bookcases", ["shelves", "shelf pins", "wall anchor", "back panel"], "fixing it to the wall"),
    ("air fryer", "air fryers", ["basket", "crisping tray", "timer dial", "heating element"], "soaking the basket"),
]
REGIONS = ("Norway Portugal Ireland Austria Poland Canada Japan Mexico Finland Greece Switzerland Denmark "
           "Australia Belgium Czechia Estonia Iceland Italy Spain Sweden").split()
CARRIERS = ["PostNord", "DPD", "UPS", "GLS", "Royal Mail", "DHL Express", "Canada Post", "Yamato", "Correos", "FedEx"]
PLANS = ["CarePlus", "Total Cover", "Worry-Free", "Shield", "ProtectOne", "Assure"]

TOPICS: list[tuple[str, list[tuple[str, list[str]]]]] = [
    ("Warranty claims for {brand} {plural}", [
        ("What the warranty covers", [
            "Every {brand} {product} comes with a {years}-year manufacturer's warranty against defects in materials and workmanship.",
            "The warranty covers the {part} and the {part2} when they fail under normal household use.",
            "Wear and tear, accidental damage and damage from {care} done the wrong way are not covered.",
            "A repair or replacement under warranty does not restart the warranty period.",
            "Commercial use of a {product} shortens the warranty to {months} months.",
        ]),
        ("How to make a claim", [
            "Register the claim in your account under Orders, pick the {product} and describe the fault.",
            "Attach a photo or a short video that shows the problem with the {part}.",
            "We reply within {hours} working hours and tell you whether we repair, replace or refund it.",
            "Keep the serial number to hand: it is printed under the {part2}.",
            "If you bought it from another retailer, a copy of the receipt is enough proof of purchase.",
        ]),
    ]),
    ("Spare parts for your {brand} {product}", [
        ("Ordering a spare part", [
            "You can order a replacement {part} or {part2} without returning the whole {product}.",
            "Spare parts ship within {days} working days and cost from {fee}.",
            "Check the model number on the rating label before you order, as parts differ between generations.",
            "Parts for models older than {years} years may no longer be available.",
        ]),
        ("Fitting it yourself", [
            "Most parts can be fitted at home with a screwdriver; the instructions come in the box.",
            "Switch the {product} off and unplug it, where it has a plug, before fitting a new {part}.",
            "If the new {part} does not fit, send it back unused within {days} days for a full refund.",
            "Our video guides show {care} and every common part swap step by step.",
        ]),
    ]),
    ("Delivering {plural} to {region}", [
        ("Delivery times and costs", [
            "We deliver {plural} to {region} with {carrier} in {days} to {days2} working days.",
            "Delivery to {region} costs {fee}, and is free on orders above {fee2}.",
            "Large items such as a {product} may travel by pallet and need a delivery slot.",
            "Remote islands and mountain areas of {region} can take up to {days2} extra days.",
        ]),
        ("Customs and duties", [
            "Orders to {region} may be charged import VAT and duties on arrival.",
            "The carrier collects any duties before handing over the parcel; we cannot pay them in advance.",
            "If you refuse a parcel because of duties, we refund the goods but not the original delivery fee.",
            "A customs declaration with the value of your {product} is attached to every parcel.",
        ]),
    ]),
    ("{plan} protection plan for {plural}", [
        ("What the plan adds", [
            "The {plan} plan extends cover for your {product} to {years} years and adds accidental damage.",
            "Spills, drops and a cracked {part} are all covered, up to two claims a year.",
            "A claim costs an excess of {fee}; everything else is paid by the plan.",
            "The plan follows the {product}, so it transfers to a new owner if you sell it.",
        ]),
        ("Buying and cancelling", [
            "You can add the plan at checkout or within {days} days of delivery.",
            "Cancel within the first {days} days for a full refund of the plan price.",
            "After that, cancelling refunds the unused months, less an admin fee of {fee}.",
            "The plan is provided by our insurance partner, whose terms are sent by email.",
        ]),
    ]),
    ("Assembly and installation of {plural}", [
        ("Booking a technician", [
            "Our technicians assemble or install your {product} on the day it is delivered or on a later date.",
            "Assembly costs {fee} per item and takes about {hours} hours.",
            "Book the service at checkout, or add it later from your order page up to {days} days before delivery.",
            "The technician takes the packaging away and checks that the {part} works.",
        ]),
        ("Before the visit", [
            "Clear a space around where the {product} will go and make sure there is a free socket nearby if it needs one.",
            "If the technician cannot reach the room, for example through a narrow stairway, the visit is charged.",
            "We call you the evening before with a two-hour arrival window.",
            "Rescheduling is free up to {hours} hours before the visit.",
        ]),
    ]),
    ("Trade-in programme: your old {product}", [
        ("How trade-in works", [
            "Trade in your old {product} and get credit of up to {fee} towards a new {brand} one.",
            "Enter the model and its condition online for an instant quote, valid for {days} days.",
            "We collect the old {product} free of charge when we deliver the new one.",
            "If it arrives in worse condition than described, for example with a broken {part}, we adjust the quote.",
        ]),
        ("Getting your credit", [
            "The credit is paid as a voucher or back to your card within {days} working days of inspection.",
            "Trade-in vouchers never expire and can be combined with sale prices.",
            "Items we cannot resell are recycled responsibly; nothing goes to landfill.",
        ]),
    ]),
    ("Looking after your {brand} {product}", [
        ("Everyday care", [
            "The best thing you can do for a {product} is {care} regularly.",
            "Clean the {part} with a soft cloth and mild soap; avoid solvents and abrasive sponges.",
            "Check the {part2} every {months} months for wear and replace it when needed.",
            "Store the {product} somewhere dry, out of direct sunlight.",
        ]),
        ("Common problems", [
            "If the {part} squeaks or sticks, a drop of silicone lubricant usually solves it.",
            "A worn {part2} is the most common reason a {product} stops working properly.",
            "Our troubleshooting tool in the app walks you through the usual fixes in a few minutes.",
            "If nothing helps, contact us with the serial number and a short description of the fault.",
        ]),
    ]),
    ("Price match promise on {plural}", [
        ("How to claim a price match", [
            "If you find the same {brand} {product} cheaper at another UK or EU retailer within {days} days, we refund the difference.",
            "Send us a link to the offer; it must be in stock and include delivery costs.",
            "Marketplace sellers, auctions, clearance and member-only prices are excluded.",
            "We check the claim within {hours} working hours and refund the difference to the original payment method.",
        ]),
    ]),
    ("Renting a {product} from {brand}", [
        ("How renting works", [
            "Rent a {product} from {fee} a month, with delivery and collection included.",
            "The minimum term is {months} months; after that you can cancel with a month's notice.",
            "Normal wear, including a worn {part}, is included; loss and serious damage are charged.",
            "You can buy the {product} at any time, and part of the rent paid is deducted from the price.",
        ]),
        ("At the end of the rental", [
            "Book the collection online; the courier brings packaging for the {product}.",
            "Clean the {product} and include the {part2} and every accessory.",
            "Your deposit is returned within {days} days of the inspection.",
        ]),
    ]),
    ("Recycling an old {product}", [
        ("Take-back service", [
            "We take back an old {product} free of charge when we deliver a new one, as the law in {region} requires.",
            "Tell us at checkout, and leave it disconnected and ready by the door.",
            "Batteries and the {part} are separated and recycled by certified partners.",
            "You can also drop small items at any of our stores, whether or not you bought them here.",
        ]),
    ]),
    ("Loyalty points on {brand} purchases", [
        ("Earning points", [
            "Members earn one point for every pound spent on {brand} {plural} and accessories.",
            "Points appear in your account {days} days after delivery, once the return period starts to run.",
            "Reviewing a {product} you bought earns {days2} bonus points.",
            "Points are not earned on delivery fees, gift cards or protection plans.",
        ]),
        ("Spending points", [
            "Every 500 points are worth a voucher of {fee}.",
            "Points expire after {months} months without a purchase.",
            "If you return an item, the points it earned are removed from your balance.",
        ]),
    ]),
    ("Corporate and bulk orders of {plural}", [
        ("Ordering for a business", [
            "Businesses ordering more than {days2} {plural} get a dedicated account manager and volume pricing.",
            "We invoice on {days}-day payment terms once your company account is approved.",
            "Delivery to several sites in {region} can be split on one order.",
            "Ask for a quote by email at business@{slug}.example with the models and quantities.",
        ]),
    ]),
    ("Product safety notice: {brand} {product} {part}", [
        ("What has happened", [
            "We have found that the {part} on some {brand} {plural} sold between {months} and {months2} months ago can wear early.",
            "No injuries have been reported, but we are replacing the {part} free of charge as a precaution.",
            "Only models with a serial number starting with {serial} are affected.",
        ]),
        ("What to do", [
            "Stop using the {product} until the {part} has been replaced.",
            "Enter the serial number on our safety page to check whether yours is affected.",
            "We send a free replacement {part} with fitting instructions, or book a technician if you prefer.",
            "If you would rather return the {product}, we refund it in full, even outside the return period.",
        ]),
    ]),
    ("Gift wrapping and gift receipts for {plural}", [
        ("Gift options", [
            "Add gift wrapping at checkout for {fee}; we wrap the {product} in recycled paper with a ribbon.",
            "A gift receipt shows the items but not the prices, and lets the recipient exchange them.",
            "Bulky items such as a {product} are wrapped with a bow on the outer box only.",
            "Gift messages of up to 250 characters are printed on a card inside.",
        ]),
    ]),
    ("Student and key-worker discount at {brand}", [
        ("Who qualifies", [
            "Students, nurses, teachers and emergency workers in {region} get {days2}% off full-price {plural}.",
            "Verify your status once through our partner, and the code stays valid for {months} months.",
            "The discount cannot be combined with other codes or used on sale items.",
            "Returns of discounted items are refunded at the price you paid.",
        ]),
    ]),
]


def _fill(template: str, rng: random.Random, brand: str, product: tuple) -> str:
    name, plural, parts, care = product
    part, part2 = rng.sample(parts, 2)
    days = rng.randint(2, 14)
    months = rng.choice([3, 6, 12, 18, 24])
    slots = {
        "brand": brand, "product": name, "plural": plural, "part": part, "part2": part2, "care": care,
        "days": days, "days2": days + rng.randint(2, 20), "months": months, "months2": months + rng.choice([6, 12]),
        "years": rng.choice([2, 3, 5, 10]), "hours": rng.choice([2, 24, 48, 72]),
        "fee": f"£{rng.choice([4, 6, 9, 12, 15, 25, 40, 60])}.{rng.choice(['00', '50', '95', '99'])}",
        "fee2": f"£{rng.choice([50, 75, 100, 150, 250])}", "region": rng.choice(REGIONS),
        "carrier": rng.choice(CARRIERS), "plan": rng.choice(PLANS), "slug": brand.lower(),
        "serial": f"{brand[:2].upper()}{rng.randint(10, 99)}",
    }
    return template.format(**slots)


def help_article(rng: random.Random, n: int) -> str:
    """One generated help-centre article (Markdown with front matter), one chunk long."""
    brand, product = rng.choice(BRANDS), rng.choice(PRODUCTS)
    title_t, sections = rng.choice(TOPICS)
    local = random.Random(rng.random())  # the same slots for the title and the body
    title = _fill(title_t, random.Random(local.random()), brand, product)
    lines = [f"---\ntitle: \"{title} ({n})\"", f"url: https://help.{brand.lower()}.example/articles/{n}",
             f"updated_at: 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "---", f"# {title}", ""]
    for heading, pool in sections:
        picked = rng.sample(pool, rng.randint(min(2, len(pool)), len(pool)))
        lines += [f"## {heading}", "", " ".join(_fill(t, local, brand, product) for t in picked), ""]
    return "\n".join(lines)


def stackfaq_article(row: dict) -> str:
    title = row["title"].replace('"', "'")
    return (f"---\ntitle: \"{title}\"\nurl: https://community.example/faq/{row['doc_id']}\n"
            f"updated_at: 2024-06-01\n---\n# {row['title']}\n\n{row['text']}\n")


def build_kb_folder(folder: Path, demo: Path, target_chunks: int, tokenizer, seed: int) -> dict:
    """The demo KB, the StackFAQ threads and generated articles up to about `target_chunks`
    chunks, counted with the encoder's own tokenizer as the reload will count them."""
    from kb_loader.chunker import chunk_document  # the KB package is optional (bot/runtime.py `open_kb`)
    from kb_loader.loaders import load_folder

    shutil.copytree(demo, folder)
    if STACKFAQ.exists():
        (folder / "community").mkdir()
        for line in STACKFAQ.read_text().splitlines():
            row = json.loads(line)
            (folder / "community" / f"{row['doc_id']}.md").write_text(stackfaq_article(row))
    have = sum(len(chunk_document(doc, tokenizer)) for doc in load_folder(folder).documents)
    rng = random.Random(seed)
    generated = folder / "help-centre"
    generated.mkdir()
    n = 0
    while have + n < target_chunks:
        (generated / f"article{n:05d}.md").write_text(help_article(rng, n))
        n += 1
    return {"demo_and_community_chunks": have, "generated_articles": n}


# --- the turns -----------------------------------------------------------------------------


def messages(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(session suffix, text) pairs; some sessions get a follow-up turn."""
    examples = load_examples()
    oos_file = ROOT / "tests/data/intents/clinc150_oos_dev.jsonl"
    oos = [json.loads(line)["text"] for line in oos_file.read_text().splitlines()]
    out: list[tuple[str, str]] = []
    while len(out) < n:
        roll = rng.random()
        session = f"s{len(out)}"
        if roll < 0.75:
            text = re.sub(r"\b\d{6,}\b", rng.choice(ORDERS), rng.choice(examples)[0])
        elif roll < 0.85:
            text = rng.choice(oos)
        elif roll < 0.9:
            text = rng.choice(["hi", "hello", "thanks!", "thank you so much"])
        else:
            out.append((session, "where is my order?"))
            text = rng.choice(ORDERS)
        out.append((session, text))
    return out[:n]


def _summary(values: list[float]) -> dict:
    p95 = statistics.quantiles(values, n=100)[94] if len(values) > 1 else values[0]
    return {"n": len(values), "mean": round(statistics.fmean(values), 2), "p95": round(p95, 2)}


async def timed_turns(rt, n: int) -> dict:
    """`n` turns, timed one by one; then each step's and tool's time from the stored traces."""
    rng = random.Random(11)
    # Warm-up: first-use costs (imports, caches) are not a turn's latency.
    for text in ("hello", "where is order A-1042?", "what is your refund policy"):
        await rt.orchestrator.handle(MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U_W",
                                                     session_id="warm", text=text))
    latencies, states, correlation_ids = [], Counter(), []
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for i, (session, text) in enumerate(messages(n, rng)):
        env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id=f"U{i % 50}",
                              session_id=f"bench:{session}", text=text)
        t0 = time.perf_counter()
        outcome = await rt.orchestrator.handle(env)
        latencies.append((time.perf_counter() - t0) * 1000)
        states[outcome.state] += 1
        correlation_ids.append(env.correlation_id)
    wall = time.perf_counter() - started
    steps, tools = defaultdict(list), defaultdict(list)
    for cid in correlation_ids:
        for span in await rt.store.traces_for(cid):
            steps[span["span"]].append(span["duration_ms"])
            for call in span["data"].get("tools", []) if span["span"] == "TOOL_LOOP" else []:
                tools[call["tool"]].append(call["ms"])
    q = statistics.quantiles(latencies, n=100)
    return {"messages": n, "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2),
            "p99_ms": round(q[98], 2), "mean_ms": round(statistics.fmean(latencies), 2),
            "turns_per_s": round(n / wall, 1), "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "states": dict(states), "steps_ms": {k: _summary(v) for k, v in steps.items()},
            "tools_ms": {k: _summary([x for x in v if x is not None]) for k, v in tools.items() if any(
                x is not None for x in v)}}


async def run(n: int, home: Path, **overrides) -> dict:
    settings = load_settings(home=home, rate_per_second=100_000, **overrides)
    async with open_runtime(settings) as rt:
        await rt.ensure_kb(settings.default_tenant)
        kb_on = rt.kb is not None and rt.kb.is_available(settings.default_tenant)
        chunks = (await asyncio.to_thread(rt.kb.status, settings.default_tenant)).chunks if kb_on else 0
        return {"kb": kb_on, "kb_chunks": chunks, **await timed_turns(rt, n)}


async def run_large(n: int, target_chunks: int, seed: int, tmp: Path) -> None:
    """The demo KB alone, then a KB of about `target_chunks` chunks, in one process."""
    cache = tmp / "cache"  # one encoder graph for both homes
    baseline = await run(n, tmp / "baseline", cache_dir=cache)
    print(json.dumps({"run": "baseline", **baseline}), flush=True)

    folder = tmp / "kb"
    settings = load_settings(home=tmp / "large", rate_per_second=100_000, cache_dir=cache, kb_dir=folder)
    from kb_loader.index import passages_of

    async with open_runtime(settings) as rt:
        tenant = settings.default_tenant
        t0 = time.perf_counter()
        encoder = rt.kb.encoder
        encoder_s = time.perf_counter() - t0
        corpus = build_kb_folder(folder, ROOT / "fixtures/kb", target_chunks, encoder.tokenizer, seed)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        report = await asyncio.to_thread(rt.kb.reload, tenant, folder)
        build_s = time.perf_counter() - t0
        passages = sum(len(passages_of(m)) for m in rt.kb.index(tenant).stored().metadatas)
        print(json.dumps({
            "run": "kb_build", "target_chunks": target_chunks, "chunks": report.chunks, "docs": report.docs,
            **corpus, "passages": passages, "encoder": report.encoder, "bulk_workers": rt.kb.bulk_workers,
            "encoder_load_s": round(encoder_s, 2), "build_s": round(build_s, 1),
            "chunks_per_s": round(report.chunks / build_s, 1),
            "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }), flush=True)
        large = {"kb": rt.kb.is_available(tenant), "kb_chunks": report.chunks, **await timed_turns(rt, n)}
    print(json.dumps({"run": "large", **large}), flush=True)
    print(json.dumps({"run": "ratio", "kb_chunks": [baseline["kb_chunks"], large["kb_chunks"]],
                      **{k: round(large[k] / baseline[k], 2) for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--kb-chunks", type=int, default=0,
                        help="also grow the KB to about this many chunks and time the turns again")
    parser.add_argument("--seed", type=int, default=5, help="of the generated help-centre articles")
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        if args.kb_chunks:
            asyncio.run(run_large(args.messages, args.kb_chunks, args.seed, Path(tmp)))
        else:
            print(json.dumps(asyncio.run(run(args.messages, args.home or Path(tmp)))))


if __name__ == "__main__":
    main()
