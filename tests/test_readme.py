"""The README's Python examples run as written: training, then the trained member as a function."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has a python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert (tmp_path / "runs" / "api-example" / "summary.json").is_file()
    assert "runs/api-example" in printed
    exec(compile(blocks[1], "README.md", "exec"), namespace)  # load_policy, after the run above
    best = namespace["result"].summary["best_member"]
    assert capsys.readouterr().out.startswith(f"member {best}: return -")
    assert namespace["total"] < 0 and namespace["policy"].env_steps == 2_000
