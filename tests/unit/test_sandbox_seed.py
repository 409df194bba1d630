"""The demo portal is built from the portal YAML; answers arrive as CRM forms create them."""

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from services.sandbox.persistence import load_portal, save_portal
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import ConfigError, make_answers, seed_demo

CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"
NPS = 1038


@pytest.fixture(scope="module")
def portal() -> SandboxPortal:
    portal = SandboxPortal()
    seed_demo(portal, CONFIG, contacts=300, seed=42)
    return portal


def test_smart_process_has_the_yaml_categories_and_fields(portal: SandboxPortal) -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    etype = portal.state.entity_types[config["survey"]["entity_type_id"]]
    assert [c.id for c in etype.categories] == [
        s["category_id"] for s in config["survey"]["segments"]
    ]
    assert etype.uf_entity_id == "CRM_5"
    types = {name: spec.type for name, spec in etype.fields.items()}
    assert types["UF_CRM_5_COMMENT"] == "string"
    assert types["UF_CRM_5_TO_SERVICE"] == "boolean"
    cosmetics = config["survey"]["segments"][0]["products"]
    for product in cosmetics:
        assert types[product["tested_field"]] == "boolean"
        assert types[product["score_field"]] in ("integer", "double")
    assert types["UF_CRM_5_SCORE"] in ("integer", "double")
    cryo = etype.fields["UF_CRM_5_CRYO_SCORE"]
    assert cryo.type == "enumeration"
    assert [(item.id, item.value) for item in cryo.items] == [
        (2001 + score, str(score)) for score in range(11)
    ]


def test_contacts_have_the_owned_fields_and_legacy_values(portal: SandboxPortal) -> None:
    contact_type = portal.state.entity_types[3]
    assert contact_type.fields["UF_CRM_NPS_LASER_A"].type in ("string", "double")
    assert contact_type.fields["UF_CRM_NPS_CRYO_B"].type in ("string", "double")
    assert contact_type.fields["UF_CRM_NPS_LASER_A_DATE"].type in ("date", "datetime")
    assert contact_type.fields["UF_CRM_NPS_CRYO_B_DATE"].type in ("date", "datetime")
    history = contact_type.fields["UF_CRM_NPS_HISTORY"]
    assert (history.type, history.multiple) == ("string", True)
    contacts = list(portal.crm.records(3).values())
    assert len(contacts) == 300
    owned = ("UF_CRM_NPS_LASER_A", "UF_CRM_NPS_CRYO_B", "UF_CRM_NPS_HISTORY")
    legacy = [c for c in contacts if any(c.get(name) not in (None, []) for name in owned)]
    assert 0.3 < len(legacy) / len(contacts) < 0.5
    assert any(len(c["UF_CRM_NPS_HISTORY"]) > 1 for c in contacts)
    assert all(c["PHONE"] and c["ASSIGNED_BY_ID"] in portal.state.users for c in contacts)


def test_users_include_managers_and_routing_responsibles(portal: SandboxPortal) -> None:
    for user_id in (5, 17, 23):
        user = portal.state.users[user_id]
        assert user["NAME"]
        assert user["LAST_NAME"]
    managers = {c["ASSIGNED_BY_ID"] for c in portal.crm.records(3).values()}
    assert len(managers) > 3


def test_answers_look_like_crm_form_submissions(portal: SandboxPortal) -> None:
    handler_add, *_ = portal.register_handler("http://ingest.local/hook")
    created = make_answers(portal, 300, seed=3)
    layout = portal.state.survey
    assert layout is not None
    items = [portal.crm.get(NPS, item_id) for item_id in created]
    assert all(item is not None for item in items)
    cryo = {
        item.id: int(item.value)
        for item in portal.state.entity_types[NPS].fields["UF_CRM_5_CRYO_SCORE"].items
    }
    laser = [i["UF_CRM_5_SCORE"] for i in items if i and i["CATEGORY_ID"] == 12]
    cryo_scores = [cryo[i["UF_CRM_5_CRYO_SCORE"]] for i in items if i and i["CATEGORY_ID"] == 14]
    assert 0 in laser + cryo_scores
    assert all(0 <= score <= 10 for score in laser + cryo_scores)
    cosmetics = [i for i in items if i and i["CATEGORY_ID"] == 10]
    skipped = [
        i for i in cosmetics if i["UF_CRM_5_SERUM_TESTED"] and i["UF_CRM_5_SERUM_SCORE"] is None
    ]
    assert skipped
    assert any(i and i["UF_CRM_5_TO_SERVICE"] for i in items)
    assert all(i and i["CONTACT_ID"] in portal.crm.records(3) for i in items)
    events = portal.take_outbox()
    assert len(events) == 300
    assert {(e.event, e.handler_id) for e in events} == {("ONCRMDYNAMICITEMADD", handler_add.id)}
    assert make_answers(portal, 0) == []


def test_missing_yaml_keys_are_named(tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    del config["survey"]["entity_type_id"]
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"survey\.entity_type_id"):
        seed_demo(SandboxPortal(), path)
    with pytest.raises(ConfigError, match="seed it first"):
        make_answers(SandboxPortal(), 1)


def test_state_file_round_trip(tmp_path: Path) -> None:
    portal = SandboxPortal(secret="s3cret")
    seed_demo(portal, CONFIG, contacts=10, seed=1)
    portal.register_handler("http://ingest.local/hook")
    make_answers(portal, 5, seed=1)
    path = tmp_path / "state" / "portal.json"
    save_portal(portal, path)
    loaded = load_portal(path, application_token="new-token")
    assert (loaded.secret, loaded.application_token) == ("s3cret", "new-token")
    assert loaded.state == portal.state
    status, body = loaded.call("crm.item.get", {"entityTypeId": NPS, "id": 5})
    assert status == 200
    assert body["result"]["item"]["id"] == 5
    assert (
        loaded.call("crm.item.add", {"entityTypeId": NPS, "fields": {}})[1]["result"]["item"]["id"]
        == 6
    )


def test_contacts_mostly_have_clearly_fake_email_addresses(portal: SandboxPortal) -> None:
    contacts = list(portal.crm.records(3).values())
    emails = [entry["VALUE"] for c in contacts for entry in c["EMAIL"]]
    assert 0.7 < len(emails) / len(contacts) < 0.9
    assert all(email.endswith(("@example.com", "@example.org")) for email in emails)


def test_the_sales_funnel_has_open_deals_with_customers_and_product_rows(
    portal: SandboxPortal,
) -> None:
    assert {p.id: p.name for p in portal.state.products.values()} == {
        101: "Laser A",
        102: "Cryo B",
        201: "Serum, 30 ml",
        202: "Day cream, 50 ml",
        301: "Installation and training",
    }
    sales = [d for d in portal.crm.records(2).values() if d["CATEGORY_ID"] == 0]
    assert len(sales) == 12
    now = portal.clock()
    for deal in sales:
        assert (deal["STAGE_ID"], deal["STAGE_SEMANTIC_ID"]) in (("NEW", "P"), ("PREPARATION", "P"))
        contact = portal.crm.get(3, deal["CONTACT_ID"])
        assert contact is not None
        assert contact["EMAIL"]
        rows = portal.crm.product_rows("D", deal["ID"])
        assert rows
        assert deal["OPPORTUNITY"] == round(sum(r["price"] * r["quantity"] for r in rows), 2)
        [created] = [e for e in portal.state.stage_history if e["OWNER_ID"] == deal["ID"]]
        assert (created["TYPE_ID"], created["CREATED_TIME"]) == (1, deal["DATE_CREATE"])
    sold = {row["productId"] for row in portal.state.product_rows}
    assert {101, 102} <= sold
    assert all(now - 31 * 86_400 < _unix(deal["DATE_CREATE"]) < now - 86_400 for deal in sales)


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_seeding_twice_gives_the_same_portal() -> None:
    # One clock for both: a record's creation time is the portal clock's, not the seed's.
    first, second = (
        SandboxPortal(clock=lambda: 1_765_000_000.0),
        SandboxPortal(clock=lambda: 1_765_000_000.0),
    )
    for built in (first, second):
        seed_demo(built, CONFIG, contacts=40, seed=3)
    assert first.state.entities == second.state.entities
    assert first.state.product_rows == second.state.product_rows


def test_the_dispatch_section_adds_products_the_link_field_and_trigger_codes(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["dispatch"] = {
        "channel": "portal",
        "products": {"101": "EQ-LASER-A", "777": "EQ-CRYO-B"},
        "portal_channel": {
            "link_field": "UF_CRM_NPS_LINK",
            "trigger": "nps_send",
            "reminder_trigger": "nps_remind",
        },
        "sales": [{"funnel": 0, "survey": "After the sale"}, {"funnel": 3, "products": True}],
    }
    path = tmp_path / "portal.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    portal = SandboxPortal()
    seed_demo(portal, path, contacts=20)
    assert portal.state.products[777].name == "Cryo B"
    assert portal.state.products[101].name == "Laser A"
    deals = portal.state.entity_types[2]
    assert deals.fields["UF_CRM_NPS_LINK"].type == "string"
    assert portal.state.trigger_codes == ["nps_send", "nps_remind"]
    funnel = deals.category(3)
    assert funnel is not None
    assert [(s.status_id, s.semantics) for s in funnel.stages][-2:] == [
        ("C3:WON", "S"),
        ("C3:LOSE", "F"),
    ]
