"""`fundwatch review ALERT_ID confirmed|rejected`: record an analyst's outcome of an alert.

Every review goes to the `reviews` Kafka topic, the one path the sink stores reviews from and
the ranker learns from. When this process can open the store itself (the embedded store is not
held by a running `fundwatch run`/`sink`, or the store is a ClickHouse server), it also inserts
the review directly so it shows at once; the sink's copy has the same review_id and replaces it.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
import uuid
from typing import Any

from streams.config import Settings

OUTCOMES = ("confirmed", "rejected")
ALERT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

DESCRIPTION = """\
Record the outcome of reviewing an alert: `confirmed` (the violation is upheld) or `rejected`
(a false alarm). Every review is kept (first review, appeal, re-review...) in the `reviews`
table; the latest one is the alert's outcome (view `alert_outcomes`). The sink's ranker learns
from each review and scores new alerts by their chance of being confirmed
(`alerts.confirm_score`; docs/reviews.md).

The alert must exist in the store. The review is produced to the `reviews` topic (stored by the
sink, learnt by the ranker); when the store is not held by another process it is also inserted
directly, so `alert_outcomes` shows it at once."""

EPILOG = """\
examples:
  fundwatch review 3f9c0a...e1 confirmed --note "病历核实,确认串换药品"
  fundwatch review 3f9c0a...e1 rejected --reviewer appeal-board --note "申诉成立"
  fundwatch query "SELECT * FROM alert_outcomes ORDER BY reviewed_at DESC LIMIT 10"

exit status: 0 recorded; 1 unknown alert, store or Kafka unavailable; 2 bad arguments"""


class ReviewError(Exception):
    """The review cannot be recorded; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("alert_id", metavar="ALERT_ID", help="the alert (alerts.alert_id)")
    parser.add_argument("outcome", choices=OUTCOMES, help="confirmed or rejected")
    parser.add_argument(
        "--reviewer",
        default=None,
        help="who reviewed it (default: the login name of this user)",
    )
    parser.add_argument("--note", default="", help="the reason, a case number... (free text)")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    try:
        lines = record_review(
            settings, args.alert_id, args.outcome, args.reviewer or _login(), args.note
        )
    except ReviewError as exc:
        print(f"fundwatch review: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def record_review(
    settings: Settings, alert_id: str, outcome: str, reviewer: str, note: str = ""
) -> list[str]:
    """Check the alert exists, produce the review, insert it directly when possible; returns
    what was done, one line per step."""
    from streams.store.client import Store, StoreBusyError, StoreError

    if not ALERT_ID.fullmatch(alert_id):
        raise ReviewError(f"{alert_id!r} is not an alert id (letters, digits, _ . : -)")
    if outcome not in OUTCOMES:
        raise ReviewError(f"outcome must be one of {', '.join(OUTCOMES)}")
    store: Store | None = Store(settings)
    busy: StoreBusyError | None = None
    try:
        store.open()
    except StoreBusyError as exc:
        store, busy = None, exc
    except StoreError as exc:
        raise ReviewError(str(exc)) from exc
    try:
        writable = store is not None and _ensure_schema(store)
        alert = _find_alert(store, busy, alert_id)
        record = new_review(alert_id, alert["detector_id"], outcome, reviewer, note)
        partition, offset = produce_review(settings, record)
        lines = [
            f"review {record['review_id']}: alert {alert_id} ({alert['detector_id']}, "
            f"{alert['kind']}) {outcome} by {reviewer}",
            f"  sent to topic {settings.topics.reviews.name} [partition {partition}, offset "
            f"{offset}]: the sink stores it and the ranker learns from it",
        ]
        if store is not None and writable:
            lines.append(_insert(store, record, partition, offset))
        elif busy is not None:
            lines.append(
                f"  not inserted directly: the store is held by process "
                f"{busy.owner.get('pid', '?')} ({busy.owner.get('command', 'fundwatch')}), "
                "whose sink stores it"
            )
        return lines
    finally:
        if store is not None:
            store.close()


def new_review(
    alert_id: str,
    detector_id: str | None,
    outcome: str,
    reviewer: str,
    note: str = "",
    reviewed_at: int | None = None,
) -> dict[str, Any]:
    """A `Review` record (schemas/avro/review.avsc) with a fresh review id."""
    return {
        "review_id": uuid.uuid4().hex,
        "alert_id": alert_id,
        "detector_id": detector_id,
        "outcome": outcome,
        "reviewer": reviewer,
        "reviewed_at": reviewed_at if reviewed_at is not None else int(time.time() * 1000),
        "note": note,
    }


def produce_review(settings: Settings, record: dict[str, Any]) -> tuple[int, int]:
    """Produce a review to the reviews topic (created if missing) and wait for the broker;
    returns its (partition, offset)."""
    from schemas.codec import Codec
    from streams.kafka.clients import make_producer
    from streams.stack.topics import ensure_topics

    spec = settings.topics.reviews
    delivered: list[Any] = []
    try:
        ensure_topics(settings, [spec], timeout=15)
        producer = make_producer(settings)
        producer.produce(
            spec.name,
            key=record["alert_id"].encode(),
            value=Codec.default().encode("Review", record),
            timestamp=record["reviewed_at"],
            on_delivery=lambda err, msg: delivered.append((err, msg)),
        )
        producer.flush(30)
    except Exception as exc:  # admin, producer and codec errors all mean: not recorded
        raise ReviewError(f"could not send the review to Kafka: {exc}") from exc
    if not delivered or delivered[0][0] is not None:
        error = delivered[0][0] if delivered else "no acknowledgement within 30 s"
        raise ReviewError(f"Kafka did not take the review ({error}); nothing was recorded")
    msg = delivered[0][1]
    return msg.partition(), msg.offset()


def _find_alert(store: Any, busy: Any, alert_id: str) -> dict[str, Any]:
    from streams.store.query import QueryError, execute_read_only

    sql = f"SELECT detector_id, kind FROM alerts WHERE alert_id = '{alert_id}' LIMIT 1"
    try:
        if store is not None:
            result = execute_read_only(store, sql)
        else:
            from streams.store.owner import query_owner

            result = query_owner(busy, sql)
    except QueryError as exc:
        raise ReviewError(f"cannot look the alert up: {exc}") from exc
    if not result.rows:
        raise ReviewError(
            f"alert {alert_id} not found in the alerts table; nothing was recorded "
            '(check the id: fundwatch query "SELECT alert_id, detector_id FROM alerts ...")'
        )
    return dict(zip(result.columns, result.rows[0], strict=True))


def _ensure_schema(store: Any) -> bool:
    """Bring the store's schema up to date (the reviews table); False if not allowed."""
    try:
        store.ensure_schema()
    except Exception:
        return False
    return True


def _insert(store: Any, record: dict[str, Any], partition: int, offset: int) -> str:
    from schemas.codec import Codec
    from streams.privacy import Pseudonymizer
    from streams.sink.rows import Lineage, review_rows

    version = Codec.default().current("Review").version
    lineage = Lineage(partition, offset, version, int(time.time() * 1000))
    try:
        for table, row in review_rows(record, lineage, Pseudonymizer(b"unused")):
            store.insert_rows(table, [row])
    except Exception as exc:
        return f"  not inserted directly ({exc}); the sink stores it"
    return f"  stored in {store.database}.reviews: alert_outcomes shows it now"


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
