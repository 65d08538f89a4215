"""The world configuration: the reference world of docs/contracts.md by default, any size by configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from rossmann_local.defs.partitions import shop_and_shift
from rossmann_local.domain.world import UnknownShop, World, reference_world
from rossmann_local.settings import ConfigError, load_world


def test_reference_world_is_the_one_of_the_domain(world: World) -> None:
    assert [(s.shop_id, s.city) for s in world.shops] == [
        (1, "Berlin"), (2, "Nurnberg"), (3, "Nurnberg"), (4, "La Nucia"), (5, "La Nucia")]
    assert [s.terminal_ids for s in world.shops] == [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12), (13, 14, 15)]
    staff = sorted(e.employee_id for e in world.employees)
    assert staff == list(range(1, 22))
    assert world.courier_id == 1
    assert world.shop(1).admin_id == 2 and world.shop(1).cashier_ids == (3, 4, 5)
    assert next(e for e in world.employees if e.employee_id == 2).first_name == "Stannis"
    assert [c.name for c in world.categories] == [
        "Baby & Toys", "Health", "Household", "Decor", "Care and fragrance"]
    assert [p.product_id for p in world.products] == list(range(1, 15))
    assert all(len(p.barcode) == 12 for p in world.products)
    berlin, la_nucia = world.products[0].prices["Berlin"], world.products[0].prices["La Nucia"]
    assert berlin.price != la_nucia.price, "prices are per city"


def test_any_number_of_shops_by_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", "100")
    world = load_world()
    assert world.shop_ids == list(range(1, 101))
    assert {s.city for s in world.shops} == {"Berlin", "Nurnberg", "La Nucia"}
    assert world.shop(100).terminal_ids == (298, 299, 300)
    assert len({t for s in world.shops for t in s.terminal_ids}) == 300


def test_a_world_file_configures_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = reference_world(shop_count=2, terminals_per_shop=5).model_copy(update={"seed": 7})
    path = tmp_path / "world.json"
    path.write_text(custom.model_dump_json())
    monkeypatch.setenv("ROSSMANN_WORLD_FILE", str(path))
    assert load_world() == custom


@pytest.mark.parametrize(("name", "value"), [("ROSSMANN_SHOP_COUNT", "many"), ("ROSSMANN_SHOP_COUNT", "0"),
                                             ("ROSSMANN_WORLD_FILE", "/nonexistent/world.json")])
def test_bad_world_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_world()


def test_an_invalid_world_file_names_the_setting_and_the_problem(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = reference_world().model_dump(mode="json")
    data["shops"][0]["city"] = "Atlantis"
    path = tmp_path / "world.json"
    path.write_text(__import__("json").dumps(data))
    monkeypatch.setenv("ROSSMANN_WORLD_FILE", str(path))
    with pytest.raises(ConfigError, match=r"(?s)ROSSMANN_WORLD_FILE.*unknown city 'Atlantis'"):
        load_world()


def test_unknown_shop_names_the_settings(world: World) -> None:
    with pytest.raises(UnknownShop, match=r"shop 9 is not in the configured world \(shops 1\.\.5\)"):
        world.shop(9)
    with pytest.raises(ConfigError, match=r"shop 9 is not in the configured world \(shops 1\.\.5\).*SHOP_COUNT"):
        shop_and_shift(world, "2026-06-01-09:00|9")  # a partition key from outside names the settings
