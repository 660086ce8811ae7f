"""The docs are the user's manual: the config reference (docs/config.md) must list every RunConfig field."""

import re

from fcn_sweep.config import RunConfig

from .conftest import REPO


def test_config_reference_lists_every_field_with_its_default():
    readme = (REPO / "docs" / "config.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", readme, flags=re.M))
    for name, default, _, _ in RunConfig.describe():
        assert name in rows, f"docs/config.md lacks {name}"
        shown = rows[name].replace("[", "(").replace("]", ")").replace("false", "False")
        assert shown == str(default), f"docs/config.md shows {name}={rows[name]}, code has {default}"
    assert set(rows) == {name for name, *_ in RunConfig.describe()}
