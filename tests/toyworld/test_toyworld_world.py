"""World generation: seeded, unique names, held-out groups, consistent relations."""

from __future__ import annotations

import pytest

from toyworld.world import World, WorldConfig, generate_world


def test_same_seed_same_world(small_world):
    again = generate_world(3, small_world.config)
    assert again.to_dict() == small_world.to_dict()


def test_different_seed_different_world(small_world):
    other = generate_world(4, small_world.config)
    assert [p.name for p in other.people] != [p.name for p in small_world.people]


def test_full_names_are_unique_and_name_words_are_not_places(small_world):
    names = [p.name for p in small_world.people]
    assert len(set(names)) == len(names) == small_world.config.num_people
    person_words = {w for p in small_world.people for w in (p.first, p.last)}
    place_words = {
        w for e in (*small_world.cities, *small_world.countries, *small_world.orgs) for w in e.name.split()
    }
    assert not person_words & place_words


def test_partial_names_are_shared(small_world):
    """Several people share a first or last name, so a partial-name query is ambiguous."""
    firsts = [p.first for p in small_world.people]
    lasts = [p.last for p in small_world.people]
    assert len(set(firsts)) < len(firsts) / 3
    assert len(set(lasts)) < len(lasts) / 2


def test_heldout_people_fraction_and_groups(small_world):
    groups = [p.group for p in small_world.people]
    heldout = groups.count("val") + groups.count("test")
    assert heldout == round(0.15 * len(groups))
    assert abs(groups.count("val") - groups.count("test")) <= 1


def test_spouses_are_mutual_and_in_the_same_group(small_world):
    married = [p for p in small_world.people if p.spouse]
    assert married
    for person in married:
        spouse = small_world.entity(person.spouse)
        assert spouse.spouse == person.id
        assert spouse.group == person.group


def test_relations_point_to_the_right_kind_of_entity(small_world):
    for person in small_world.people:
        assert small_world.entity(person.birthplace).id.startswith("city:")
        assert small_world.entity(person.employer).kind == "company"
        assert small_world.entity(person.alma_mater).kind == "university"
    for city in small_world.cities:
        assert small_world.entity(city.country).id.startswith("country:")
    assert {c.country for c in small_world.cities} == {c.id for c in small_world.countries}


def test_answers_list_name_then_aliases(small_world):
    city = next(c for c in small_world.cities if c.aliases)
    assert small_world.answers(city.id) == [city.name, city.aliases[0]]
    assert city.name.startswith(city.aliases[0]) and city.name != city.aliases[0]
    company = next(o for o in small_world.orgs if o.kind == "company")
    assert small_world.answers(company.id) == [company.name, company.aliases[0]]


def test_no_two_answers_of_different_entities_share_a_word(small_world):
    """A shared word ("Port", "University") would let one constant answer score F1 on many questions."""
    owner: dict[str, str] = {}
    for entity in (*small_world.countries, *small_world.cities, *small_world.orgs):
        for word in {w.lower() for answer in small_world.answers(entity.id) for w in answer.split()}:
            assert owner.setdefault(word, entity.id) == entity.id, f"{word!r} names two entities"


def test_save_load_round_trip(small_world, tmp_path):
    path = small_world.save(tmp_path / "world.json")
    assert World.load(path).to_dict() == small_world.to_dict()


@pytest.mark.parametrize("field,value", [("num_people", 5), ("heldout_fraction", 1.0), ("num_cities", 0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        generate_world(0, WorldConfig(**{field: value}))
