"""scripts/mutations.py stays applicable: every break quotes text that occurs exactly once in
its file and names test files that exist (scripts/check_tests.py runs the breaks themselves)."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_mutations():
    path = os.path.join(REPO, "scripts", "mutations.py")
    spec = importlib.util.spec_from_file_location("simpledet_mutations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTATIONS


def test_every_break_applies_once_and_names_existing_tests():
    mutations = load_mutations()
    names = [m.name for m in mutations]
    assert len(set(names)) == len(names)
    for m in mutations:
        with open(os.path.join(REPO, m.file)) as f:
            assert f.read().count(m.old) == 1, (m.name, m.file, m.old)
        assert m.new != m.old and m.tests, m.name
        for test in m.tests:
            assert os.path.isfile(os.path.join(REPO, test.split("::")[0])), (m.name, test)


def test_the_issue_breaks_are_listed():
    names = {m.name for m in load_mutations()}
    assert {"reseed", "rescale_grad", "anchor_offset", "iou_plus_one", "rle_column_major",
            "rle_flip_axis", "scale_inverse"} <= names
