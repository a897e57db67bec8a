"""Every fact the project shows as the reference report's (reference.py) is in the reference's text, under the
question it is shown with, in the words or numbers shown; and the README shows no other."""
import re

import pytest

import reference
from helpers import ROOT, SHARED

TEXT = SHARED / "reference" / "assignment-report.txt"
needs_text = pytest.mark.skipif(not TEXT.is_file(), reason=f"the reference's text is not at {TEXT} (it lives "
                                                            "beside the project, never in it)")


def sections(text: str) -> dict:
    """Question ("2b") -> the reference's text under its heading, up to the next question's heading."""
    found, current = {}, None
    for line in text.splitlines():
        heading = re.match(r"#+\s*Task\s*(\d)([a-g])?\b", line)
        if heading:
            current = heading.group(1) + heading.group(2) if heading.group(2) else None
            if current:
                found[current] = []
        elif current:
            found[current].append(line)
    return {key: "\n".join(lines) for key, lines in found.items()}


def numbers(value):
    """Every number in a fact's value (lists and dicts walked), as the reference would print it."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers(item)


WORDS = {10: "ten"}


def printed_forms(number) -> set:
    if isinstance(number, float):
        return {str(number), f"{number:.3f}", f"{number:g}"}
    return {str(number), WORDS.get(number, str(number))}


@needs_text
def test_every_reference_fact_is_in_the_reference_under_its_question():
    by_question = sections(TEXT.read_text())
    assert set(by_question) >= {"1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "3a", "3b", "3c", "3d", "4a",
                                "4b", "4c"}
    facts = reference.every_fact()
    assert len(facts) > 20
    for name, fact in facts:
        section = by_question[fact.question]
        for words in fact.printed:
            assert words in section, f"{name}: {words!r} is not in the reference's {fact.question}"
        if isinstance(fact.value, str) and fact.value != reference.NOT_GIVEN:
            assert fact.value in section, f"{name}: {fact.value!r} is not the reference's words in {fact.question}"
        printed = " ".join(fact.printed)
        for number in numbers(fact.value):
            if name == "HYPERPARAMETERS['task4a']" and number == 5e-4:
                assert "5\\*10<sup>-4</sup>" in printed
                continue
            assert printed_forms(number) & set(re.findall(r"-?[\d.]+", printed)) or any(
                form in printed for form in printed_forms(number)), f"{name}: {number} is not printed as such"


@needs_text
def test_what_the_reference_does_not_give_is_not_in_it():
    by_question = sections(TEXT.read_text())
    # No accuracy before deepening (3c), for the best model (3d) or for the ResNet (4a): the report says "not given".
    for question in ("3d", "4a"):
        assert not re.search(r"0\.\d{3}|\d\d(\.\d)?\s*%", by_question[question]), question
    assert reference.result("task3c_before", "test") is None and reference.result("task3d", "test") is None
    assert reference.result("task4a", "test") is None and reference.result_text("task3d", "test") == "not given"
    # Task 2 states no hyperparameters.
    assert "task2" not in reference.HYPERPARAMETERS
    assert not re.search(r"learning rate|batch size", by_question["2a"] + by_question["2b"], re.IGNORECASE)


def test_the_reference_facts_the_report_is_built_on():
    """The table itself: what each question's reference value is (a change here must be checked in the text)."""
    assert reference.result("task2", "test") == 0.739 and reference.result("task2", "train", "loss") == 0.257
    assert reference.result("task3_model1", "validation", "loss") == 0.604
    assert reference.result("task3_model2", "test", "loss") == 0.862
    assert reference.HYPERPARAMETERS["task4a"].value == {"optimizer": "sgd", "batch_size": 32, "lr": 5e-4}
    assert reference.convolution_result() == [[-6, 8, 3, -20, 0], [-13, -4, 12, -2, -9], [-4, -13, -4, 3, -9]]
    assert reference.CONVOLUTION_AS_PRINTED.value[1] == [-13, 3, -4, 12, -2, -9]       # the stray value, as printed
    assert reference.FILTER_INDICES.value == [14, 26, 32, 49, 52]


def test_our_models_are_the_reference_tables():
    """Task 3a's networks, read back as the reference's layer tables, are the reference's (its stray "1"s in the
    activation column of four pooling and normalisation rows aside, and its softmax, which is in our loss)."""
    import report_layers
    import task3_model1
    import task3_model2

    for name, model in (("task3_model1", task3_model1.Model1()), ("task3_model2", task3_model2.Model2())):
        ours = report_layers.reference_form(repr(model))
        theirs = reference.LAYERS[name].value
        assert len(ours) == len(theirs), name
        for mine, given in zip(ours, theirs):
            assert mine[0] == given[0] and mine[1].split()[0] == given[1] and mine[2] == given[2], (mine, given)
            assert mine[3] == given[3] or given[3] == "1" or (given[3], mine[3]) == ("Softmax", "Softmax (in the loss)")


def test_the_readme_shows_the_reference_as_the_table_has_it():
    readme = (ROOT / "README.md").read_text()
    results = readme[readme.index("## Results"):]
    rows = {cells[0]: cells[-1] for cells in (
        [c.strip() for c in line.strip().strip("|").split("|")] for line in results.splitlines()
        if line.startswith("| Task"))}
    expected = {"Task 2": "task2", "Task 3 Model 1": "task3_model1", "Task 3 Model 2": "task3_model2",
                "Task 3c before deepening": "task3c_before", "Task 3d": "task3d", "Task 4a": "task4a"}
    for row, name in expected.items():
        label = next(key for key in rows if key.startswith(row) and key.rstrip(" ⁵") == row)
        assert rows[label] == reference.result_text(name, "test"), row
    for text in (readme, *(path.read_text() for path in (ROOT / "docs").glob("*.md"))):
        assert "roughly +4" not in text and "roughly\n+4" not in text
