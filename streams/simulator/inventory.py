"""Boxes on the shelves: every box sold was scanned in (STOCK_IN) earlier, and sells once.

Each (institution, drug) shelf is a FIFO of trace codes. When a sale needs more boxes than the
shelf holds, a delivery arrives first: a carton is scanned in at the given time (the visit's
start, so before the sale). Returned boxes go back on the shelf only from their return time on,
so a box is never sold again before its RETURN scan.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from streams.simulator.formulary import Billable
from streams.simulator.world import mix

SERIAL_MOD = 10**13
SERIAL_STEP = 2_654_435_761  # coprime with 10: serials stay unique per product


class Inventory:
    """Shelves per (site, drug) and the trace-code factory."""

    def __init__(self, seed: int, stock_in: Callable[[int, int, Billable, list[str], int], None]):
        """`stock_in(t, site, drug, codes, carton_no)` emits the STOCK_IN scans of a delivery."""
        self.seed = seed
        self._stock_in = stock_in
        self._shelves: dict[tuple[int, int], deque[str]] = {}
        self._returns: dict[tuple[int, int], list[tuple[int, str]]] = {}
        self._made: dict[int, int] = {}
        self._bases: dict[int, int] = {}
        self.cartons = 0

    def serial_base(self, drug: Billable) -> int:
        """The seeded offset of a product's serials."""
        base = self._bases.get(drug.index)
        if base is None:
            base = self._bases[drug.index] = mix(self.seed, 97, drug.index) % SERIAL_MOD
        return base

    def new_codes(self, drug: Billable, n: int) -> list[str]:
        """Fresh trace codes: 7-digit product code + 13-digit serial, unique per box."""
        made = self._made.get(drug.index, 0)
        self._made[drug.index] = made + n
        base = self.serial_base(drug)
        prefix = drug.product_code
        return [f"{prefix}{(base + (made + k) * SERIAL_STEP) % SERIAL_MOD:013d}" for k in range(n)]

    def take(
        self,
        site: int,
        drug: Billable,
        n: int,
        sale_t: int,
        stock_t: int,
        carton: int = 6,
        exact: bool = False,
    ) -> list[str]:
        """n boxes for a sale at `sale_t`; a delivery at `stock_t` (< sale_t) fills a shortfall.

        `exact`: deliver only the shortfall (a delivery ahead of the simulation clock must not
        leave boxes on the shelf that an earlier sale could take before they arrive).
        """
        key = (site, drug.index)
        codes: list[str] = []
        returned = self._returns.get(key)
        if returned:
            keep = []
            for t_ret, code in returned:
                if t_ret < sale_t and len(codes) < n:
                    codes.append(code)
                else:
                    keep.append((t_ret, code))
            self._returns[key] = keep
        shelf = self._shelves.get(key)
        if shelf is None:
            shelf = self._shelves[key] = deque()
        missing = n - len(codes) - len(shelf)
        if missing > 0:
            delivery = self.new_codes(drug, missing if exact else max(carton, missing))
            self.cartons += 1
            self._stock_in(stock_t, site, drug, delivery, self.cartons)
            shelf.extend(delivery)
        while len(codes) < n:
            codes.append(shelf.popleft())
        return codes

    def give_back(self, site: int, drug: Billable, codes: list[str], t_return: int) -> None:
        """Boxes returned at `t_return` can be sold again after that time."""
        self._returns.setdefault((site, drug.index), []).extend((t_return, c) for c in codes)
