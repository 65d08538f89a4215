"""A shift in the shop: the courier's deliveries, then the terminals' sales."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection

from rossmann_local.domain.clock import previous_shift, shift_at_or_after
from rossmann_local.domain.shifts import ShiftWindow, shift_window
from rossmann_local.domain.simulation import Delivery, Receipt, ShiftSales, plan_deliveries, simulate_terminal_sales
from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.history import shelf_at, shelf_timeline


class ShiftOutOfOrder(RuntimeError):
    """An earlier shift of the shop has its deliveries but not its sales: selling now would sell
    the stock that shift has yet to sell. Nothing was written."""


@dataclass(frozen=True)
class DeliveriesTaken:
    deliveries: list[Delivery]

    @property
    def products_delivered(self) -> int:
        return sum(len(d.lines) for d in self.deliveries)

    @property
    def units_delivered(self) -> int:
        return sum(line.quantity for d in self.deliveries for line in d.lines)


PRODUCT, QUANTITY = ledger.LINE_COLUMNS.index("product_id"), ledger.LINE_COLUMNS.index("quantity")


class ShiftNotOpen(RuntimeError):
    """Live sales of a shift whose deliveries are not taken yet: the receipts would miss them."""


@dataclass(frozen=True)
class ReceiptsStored:
    """How the shift's receipts in the shop database were brought to the simulation's."""

    kept: int  # already there, row for row (e.g. written live during the shift)
    written: int  # inserted now
    replaced: int  # there but different (a catalogue change arrived after they were written), rewritten


@dataclass(frozen=True)
class ShiftSold:
    sales: ShiftSales
    negative_stock: dict[int, int]  # product -> stock, for any product below zero after the shift
    stored: ReceiptsStored


@dataclass(frozen=True)
class LiveSalesWritten:
    shift: ShiftWindow
    until: datetime  # every receipt before this simulated time is in the shop database
    stored: ReceiptsStored
    receipts_so_far: int  # the shift's receipts in the shop database now
    written_from: datetime | None  # simulated times of the first and last receipt written now
    written_to: datetime | None


def _refuse_if_out_of_order(conn: Connection, world: World, shop: Shop, shift: ShiftWindow) -> None:
    """A shift starts from the stock its predecessors left: once a shop has sold a shift, each later
    shift needs its previous shift sold (no gap in the shop's history), and no earlier shift may have
    its deliveries but not its sales. A shop that has sold nothing before the shift opens on empty
    shelves, as every shop does on the world's first day (``make day --day`` on a fresh data dir)."""
    local = shift.start  # shifts are in the world's zone; the ledger's times are converted to it
    previous = previous_shift(world, shift)
    if (previous is not None and not ledger.shift_progress(conn, previous)[1]
            and ledger.shifts_sold_before(conn, shift.start)):
        raise ShiftOutOfOrder(
            f"shop {shop.shop_id}: shift {local:%Y-%m-%d %H:%M} ({world.timezone}) opens with the stock its "
            f"previous shift, {previous.start:%Y-%m-%d %H:%M}, leaves, and that shift "
            "is not sold; run that shift first (a backfill from the shop's last sold shift runs them in order). "
            "Nothing was written.")
    if waiting := ledger.earlier_shifts_without_sales(conn, shift.start):
        raise ShiftOutOfOrder(
            f"shop {shop.shop_id}: shift {local:%Y-%m-%d %H:%M} ({world.timezone}) comes after "
            f"{', '.join(f'{w.astimezone(local.tzinfo):%Y-%m-%d %H:%M}' for w in waiting)}, whose deliveries are "
            "in but whose sales are not; run that shift first (re-executing this one afterwards gives the right "
            "receipts). Nothing was written.")


def take_deliveries(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> DeliveriesTaken:
    """The courier's delivery of the shift, ordered at its start from the stock the previous shifts
    left (the stock policy), accepted by the shop's admin and recorded locally (it restocks the shelf
    at its accepted time); a re-run replaces it with the same one."""
    with shop_databases.transaction(shop.shop_id) as conn:
        _refuse_if_out_of_order(conn, world, shop, shift)
        opening = ledger.stock_at(conn, shift.start)
        deliveries = plan_deliveries(world, shop, shift, shelf_at(conn, shift.start), opening)
        ledger.replace_shift_deliveries(conn, shift, deliveries)
        # Bookkeeping on the wall clock (when it was recorded), not a fact of the simulated world.
        ledger.record_shift_deliveries(conn, shift, shop.admin_id, deliveries, datetime.now(UTC))
    return DeliveriesTaken(deliveries)


def _simulate(conn: Connection, world: World, shop: Shop, shift: ShiftWindow) -> ShiftSales:
    return simulate_terminal_sales(world, shop, shift, shelf_timeline(conn, shift),
                                   ledger.stock_at(conn, shift.start), ledger.shift_deliveries(conn, shift))


def _store_receipts(conn: Connection, shift: ShiftWindow, receipts: list[Receipt], count: int) -> ReceiptsStored:
    """Make the shift's stored receipts the first ``count`` of ``receipts`` (all the shift's, in time
    order): what is already there row for row stays untouched (a CDC reader sees each receipt once),
    anything from the first difference on is rewritten, and matching receipts after ``count`` stay."""
    stored = ledger.stored_receipts(conn, shift)
    same = 0
    for have, want in zip(stored, receipts, strict=False):
        if have != ledger.receipt_row(want):
            break
        same += 1
    changes: Counter[int] = Counter()
    if same < len(stored):
        ledger.delete_receipts_from(conn, shift, stored[same][0])
        for removed in stored[same:]:
            for line in removed[-1]:
                changes[line[PRODUCT]] += line[QUANTITY]
    target = max(count, same)
    ledger.insert_receipts(conn, shift, receipts[same:target])
    for receipt in receipts[same:target]:
        for sold in receipt.lines:
            changes[sold.product_id] -= sold.quantity
    ledger.change_stock(conn, changes)
    return ReceiptsStored(kept=same, written=target - same, replaced=len(stored) - same)


def sell_shift(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> ShiftSold:
    """Every receipt of the shop's terminals during the shift, simulated from a seed of the shop and
    shift at the catalogue versions in effect at each receipt's time, in one transaction. Receipts
    already written (live, or by an earlier run) that equal the simulation's are kept, the rest
    written, so a re-run leaves the same rows."""
    with shop_databases.transaction(shop.shop_id) as conn:
        _refuse_if_out_of_order(conn, world, shop, shift)
        sales = _simulate(conn, world, shop, shift)
        stored = _store_receipts(conn, shift, sales.receipts, len(sales.receipts))
        ledger.record_shift_sales(conn, shift, shop.admin_id, sales, datetime.now(UTC))  # bookkeeping, wall clock
        negative = ledger.negative_stock(conn)
    return ShiftSold(sales, negative, stored)


def write_live_sales(world: World, shop: Shop, shift: ShiftWindow, until: datetime,
                     shop_databases: ShopDatabases) -> LiveSalesWritten:
    """The shift's receipts up to simulated time ``until`` (exclusive) as the terminals ring them up,
    for live mode: the shift is simulated whole, from the same inputs as ``sell_shift``, and only its
    receipts before ``until`` that the shop database does not hold yet are written. Stopping and
    starting again resumes from what the database holds; the shift's end (``sell_shift``) then adds
    the rest, so the shift ends with exactly a backfill's rows."""
    with shop_databases.transaction(shop.shop_id) as conn:
        _refuse_if_out_of_order(conn, world, shop, shift)
        delivered, sold = ledger.shift_progress(conn, shift)
        if not delivered:
            raise ShiftNotOpen(f"shop {shop.shop_id}: the deliveries of shift {shift.start:%Y-%m-%d %H:%M} are not "
                               "taken yet; its sales would miss them. Nothing was written.")
        sales = _simulate(conn, world, shop, shift)
        count = len(sales.receipts) if sold else bisect_left([r.transaction_time for r in sales.receipts], until)
        stored = _store_receipts(conn, shift, sales.receipts, count)
    new = sales.receipts[stored.kept:stored.kept + stored.written]
    return LiveSalesWritten(shift, until, stored, stored.kept + stored.written,
                            new[0].transaction_time if new else None, new[-1].transaction_time if new else None)


def next_live_sale(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> datetime | None:
    """The simulated time of the shift's first receipt the shop database does not hold yet (None when
    it holds them all): live mode writes when that time has come, not on every tick."""
    with shop_databases.transaction(shop.shop_id) as conn:
        sales = _simulate(conn, world, shop, shift)
        stored = ledger.shift_receipt_count(conn, shift)
    return sales.receipts[stored].transaction_time if stored < len(sales.receipts) else None


@dataclass(frozen=True)
class ShopProgress:
    """Where a shop stands for live mode, read from its database (so a restart resumes there)."""

    shift: ShiftWindow | None  # the first shift from the session's start whose sales are not recorded
    delivered: bool  # whether that shift's deliveries are taken


def shop_progress(world: World, shop: Shop, since: datetime, shop_databases: ShopDatabases) -> ShopProgress:
    with shop_databases.transaction(shop.shop_id) as conn:
        last = ledger.last_shift_sold(conn)
        moment = since if last is None else max(since, shift_window(world, last).end)
        shift = shift_at_or_after(world, moment)
        delivered = shift is not None and ledger.shift_progress(conn, shift)[0]
    return ShopProgress(shift, delivered)


def last_sold_shift(world: World, shop: Shop, shop_databases: ShopDatabases) -> ShiftWindow | None:
    """The newest shift whose sales the shop's database records."""
    with shop_databases.transaction(shop.shop_id) as conn:
        last = ledger.last_shift_sold(conn)
    return shift_window(world, last) if last is not None else None
