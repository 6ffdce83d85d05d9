"""Mutation check: break the samplers, the windowing and the separation steps one way at a time, in a
copy of the tree, and list the tests that go red. A mutation that no test catches is a hole in the
safety net. Run: .venv/bin/python scripts/mutate.py (about 4 minutes on 2 cores)."""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]
MUTS = [
 ("samplers: sample_scheduler without the per-step imputation", "mtldm_cli/samplers.py",
  "            x = _impute(x, known[1], scheduler.add_noise(known[0], noise_like(x, generator), t.reshape(1)))\n", "            pass\n"),
 ("samplers: sample_ddim without the per-step imputation", "mtldm_cli/samplers.py",
  "            x = _impute(x, known[1], q_sample(known[0], a_t.to(x.dtype), noise_like(x, generator)))\n", "            pass\n"),
 ("samplers: imputation with the un-noised given latent", "mtldm_cli/samplers.py",
  "scheduler.add_noise(known[0], noise_like(x, generator), t.reshape(1))", "known[0]"),
 ("windows: stitch cuts each overlap at its start, not its middle", "mtldm_cli/windows.py",
  "cuts = [0, *((b + e) // 2 for b, e in zip(starts[1:], stops)), length]", "cuts = [0, *(b for b, e in zip(starts[1:], stops)), length]"),
 ("windows: a window no longer imputes its overlap with the previous one", "mtldm_cli/sampling.py",
  "        if w.before:  # the overlap with the previous window is known\n", "        if False:\n"),
 ("windows: crossfade ramps over the nominal overlap only (half of it)", "mtldm_cli/windows.py",
  "        w[:window.before] = _ramp(window.before)", "        w[:window.before // 2] = _ramp(window.before // 2)"),
 ("separation: dirac pins the stem to m - others (no factor S)", "mtldm_cli/separation.py",
  "    x[:, j : j + 1] = x.shape[1] * mixture - others", "    x[:, j : j + 1] = mixture - others"),
 ("separation: gaussian step with its sign flipped", "mtldm_cli/separation.py",
  "    return eps - sigma / (2 * gamma**2) * (mixture - x.mean(1, keepdim=True))",
  "    return eps + sigma / (2 * gamma**2) * (mixture - x.mean(1, keepdim=True))"),
 ("separation: chunks overlap-added without dividing by the weights", "mtldm_cli/windows.py",
  "        return self.total / self.weight", "        return self.total"),
]
TESTS = ["tests/test_imputation.py", "tests/test_sampling.py", "tests/test_samplers.py", "tests/test_pipeline.py"]
survived = 0
for name, rel, old, new in MUTS:
    dst = Path(tempfile.mkdtemp(prefix="mtldm-mutant-")) / "tree"
    shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "models"))
    (dst / "mtldm_cli" / "models").symlink_to(SRC / "mtldm_cli" / "models")
    f = dst / rel
    text = f.read_text()
    assert text.count(old) == 1, name
    f.write_text(text.replace(old, new))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                       cwd=dst, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", r.stdout, re.M)))
    assert "error" not in r.stdout.splitlines()[-1] or failed, r.stdout[-2000:]
    print(f"## {name}\n   {len(failed)} failed: " + ("; ".join(failed) if failed else "NONE (survived)"), flush=True)
    survived += not failed
    shutil.rmtree(dst.parent, ignore_errors=True)
sys.exit(1 if survived else 0)
