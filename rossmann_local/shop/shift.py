"""A shift in the shop: the courier's deliveries, then the terminals' sales."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.simulation import Delivery, ShiftSales, plan_deliveries, simulate_terminal_sales
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


@dataclass(frozen=True)
class ShiftSold:
    sales: ShiftSales
    negative_stock: dict[int, int]  # product -> stock, for any product below zero after the shift


def _refuse_if_out_of_order(conn: Connection, shop: Shop, shift: ShiftWindow) -> None:
    """A shift starts from the stock its predecessors left: if one of them has its deliveries but not
    its sales, that stock is not known yet."""
    if waiting := ledger.earlier_shifts_without_sales(conn, shift.start):
        raise ShiftOutOfOrder(
            f"shop {shop.shop_id}: shift {shift.start:%Y-%m-%d %H:%M} UTC comes after "
            f"{', '.join(f'{w:%Y-%m-%d %H:%M}' for w in waiting)} UTC, whose deliveries are in but whose "
            "sales are not; run that shift first (re-executing this one afterwards gives the right "
            "receipts). Nothing was written.")


def take_deliveries(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> DeliveriesTaken:
    """The courier's delivery of the shift, ordered at its start from the stock the previous shifts
    left (the stock policy), accepted by the shop's admin and recorded locally (it restocks the shelf
    at its accepted time); a re-run replaces it with the same one."""
    with shop_databases.transaction(shop.shop_id) as conn:
        _refuse_if_out_of_order(conn, shop, shift)
        opening = ledger.stock_at(conn, shift.start)
        deliveries = plan_deliveries(world, shop, shift, shelf_at(conn, shift.start), opening)
        ledger.replace_shift_deliveries(conn, shift, deliveries)
        # Bookkeeping on the wall clock (when it was recorded), not a fact of the simulated world.
        ledger.record_shift_deliveries(conn, shift, shop.admin_id, deliveries, datetime.now(UTC))
    return DeliveriesTaken(deliveries)


def sell_shift(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> ShiftSold:
    """Every receipt of the shop's terminals during the shift, simulated from a seed of the shop and
    shift at the catalogue versions in effect at each receipt's time; a re-run replaces the shift's
    receipts with the same ones, in one transaction."""
    with shop_databases.transaction(shop.shop_id) as conn:
        _refuse_if_out_of_order(conn, shop, shift)
        ledger.delete_shift_receipts(conn, shift)
        sales = simulate_terminal_sales(world, shop, shift, shelf_timeline(conn, shift),
                                        ledger.stock_at(conn, shift.start), ledger.shift_deliveries(conn, shift))
        ledger.insert_receipts(conn, shift, sales.receipts)
        ledger.recompute_stock(conn)
        ledger.record_shift_sales(conn, shift, shop.admin_id, sales, datetime.now(UTC))  # bookkeeping, wall clock
        negative = ledger.negative_stock(conn)
    return ShiftSold(sales, negative)
