"""Runs the original qlty's own test suite with qlty_cpp in its place, and checks the outcome.

    python run_qlty_suite.py WORK_DIR [pytest args...]

Downloads the source distribution of the installed qlty's version from PyPI (once, into WORK_DIR), copies its
tests/ with conftest.py (the alias) over theirs, and runs the test files of the APIs qlty_cpp offers (FILES) with
pytest. Every failure must be listed in expected_failures.txt with its cause: `internal` (the test calls or
patches the original's internals, which qlty_cpp does not have), `not-offered` (a public function of the original
outside qlty_cpp's API: the metadata, stratified sampling and Zarr dataset helpers of patch_pairs_2d), `message`
(qlty_cpp raises the same exception type with its own words, and the test matches the original's), `qlty-bug` (the
original behaves wrongly and the test checks that behaviour; qlty_cpp does not copy it) or `qlty-test` (the test
itself is wrong). A failure not listed, or a listed test that passes, fails this run. Prints tests run, passed, failed (per cause) and skipped.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The original's test files for the APIs qlty_cpp offers (the 2.5D quilts, tokens, pyramids, false colour and
# stack conversion have C++ versions but no Python binding yet; test_base and test_numba_mock test internals only).
FILES = [
    "test_qlty.py", "test_qlty2D_coverage.py", "test_stitch_parallel.py", "test_edge_cases.py",
    "test_qlty_large.py", "test_qlty2DLarge_coverage.py", "test_qlty3DLarge_coverage.py",
    "test_patch_pairs.py", "test_patch_pairs_gradient.py", "test_patch_pairs_positions.py",
    "test_patch_pairs_3d.py", "test_patch_pairs_3d_gradient.py", "test_cleanup.py", "test_cleanup_coverage.py",
]
CAUSES = ("internal", "not-offered", "message", "qlty-bug", "qlty-test")


def fetch_tests(work: Path) -> Path:
    """The original's tests/ of the installed version, with our conftest.py."""
    v = version("qlty")
    src = work / f"qlty-{v}"
    if not (src / "tests").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        "--no-binary", ":all:", "-d", str(work), f"qlty=={v}"], check=True)
        with tarfile.open(work / f"qlty-{v}.tar.gz") as tar:
            tar.extractall(work, filter="data") if sys.version_info >= (3, 11, 4) else tar.extractall(work)
    shutil.copy(HERE / "conftest.py", src / "tests" / "conftest.py")
    return src


def expected() -> dict:
    """test id -> (cause, reason) from expected_failures.txt (`id | cause | reason`, # comments)."""
    table = {}
    for line in (HERE / "expected_failures.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test, cause, reason = (part.strip() for part in line.split("|", 2))
        assert cause in CAUSES, f"expected_failures.txt: cause of {test} must be one of {CAUSES}, got {cause}"
        table[test] = (cause, reason)
    return table


def outcomes(junit: Path) -> dict:
    """test id (file::name) -> passed / failed / skipped."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        file = next((m for m in module if m.startswith("test_")), module[-1]) + ".py"
        cls = [m for m in module[module.index(file[:-3]) + 1:]] if file[:-3] in module else []
        test = "::".join([file, *cls, case.get("name")])
        kinds = {child.tag for child in case}
        result[test] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return result


def main() -> int:
    work = Path(sys.argv[1]).resolve()
    src = fetch_tests(work)
    junit = work / "qlty-suite.xml"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(src / "tests"),
                    f"--junitxml={junit}", *sys.argv[2:], *(f"tests/{f}" for f in FILES)], cwd=src, env=env)
    got, known = outcomes(junit), expected()
    failed = {t for t, o in got.items() if o == "failed"}
    unexpected = sorted(failed - known.keys())
    stale = sorted(t for t in known if got.get(t) == "passed")
    counts = {o: sum(1 for v in got.values() if v == o) for o in ("passed", "failed", "skipped")}
    by_cause = {c: sum(1 for t in failed if known.get(t, ("",))[0] == c) for c in CAUSES}
    print(f"\nqlty {version('qlty')}'s own tests with qlty_cpp: {len(got)} run, {counts['passed']} passed, "
          f"{counts['failed']} failed ({', '.join(f'{n} {c}' for c, n in by_cause.items())}, "
          f"{len(unexpected)} not listed), {counts['skipped']} skipped")
    for t in unexpected:
        print(f"  FAILED, not in expected_failures.txt: {t}")
    for t in stale:
        print(f"  PASSED, but expected_failures.txt lists it ({known[t][0]}): {t}")
    return 1 if unexpected or stale or not got else 0


if __name__ == "__main__":
    sys.exit(main())
