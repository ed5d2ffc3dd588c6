"""A text-filter pipeline: every loaded bundle that provides text.Filter@1 is one stage; the
host serves them a key-value store (host.Store@1); a changed bundle is reloaded while it runs.

Run it with ``python app.py [BACKEND]``. It works on a copy of the bundles in a temporary
directory, where it generates their glue with ``luaplug codegen --bundle``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import luaplug

HERE = Path(__file__).resolve().parent
FILTERS = ("redact", "upper")  # loaded in this order, which is the pipeline's order


class Store:
    """host.Store@1: a dict of strings; a key never put reads as ``""``."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str:
        return self.data.get(key, "")

    def put(self, key: str, value: str) -> None:
        self.data[key] = value


class Watcher:
    """Polls the files of bundle directories: which bundles changed since the last poll."""

    def __init__(self, bundles: dict[str, Path]) -> None:
        self.bundles = bundles
        self.seen = {name: self._stamp(path) for name, path in bundles.items()}

    @staticmethod
    def _stamp(path: Path) -> dict[Path, tuple[int, int]]:
        stats = {p: p.stat() for p in path.rglob("*") if p.is_file()}
        return {p: (st.st_mtime_ns, st.st_size) for p, st in stats.items()}

    def changed(self) -> list[str]:
        names = []
        for name, path in self.bundles.items():
            stamp = self._stamp(path)
            if stamp != self.seen[name]:
                self.seen[name] = stamp
                names.append(name)
        return names


def reload_changed(rt: luaplug.Runtime, watcher: Watcher) -> None:
    for name in watcher.changed():
        rt.reload(name)  # a new VM; if the new version fails to load, the old one keeps serving
        print(f"reloaded {name}")


def watch(rt: luaplug.Runtime, watcher: Watcher, interval: float = 0.5) -> None:
    """Reload every bundle whose files change, until interrupted."""
    while True:
        reload_changed(rt, watcher)
        time.sleep(interval)


def build(workdir: Path) -> Path:
    """A copy of this app's bundles under ``workdir``, each with its generated glue and manifest."""
    root = workdir / "filters_app"
    shutil.copytree(HERE, root, ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    for name in FILTERS:
        bundle = root / name
        out = bundle / "generated"
        codegen = ["codegen", "--bundle", str(bundle / "bundle.toml"), "--lang", "lua", "--out", str(out)]
        subprocess.run([sys.executable, "-m", "luaplug", *codegen], check=True, stdout=subprocess.DEVNULL)
        shutil.copyfile(out / "manifest.toml", bundle / "manifest.toml")
    return root


def run_pipeline(rt: luaplug.Runtime, api: Path, text: str) -> str:
    for provider in rt.providers("text.Filter@1"):
        with rt.bind(api, "text.Filter@1", bundle=provider.bundle) as stage:
            text = stage.apply(text)
    return text


def main(backend: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp, luaplug.Runtime(backend, hot_reload=True) as rt:
        root = build(Path(tmp))
        api = root / "api.toml"
        store = Store()
        store.put("redact.words", "hunter2 s3cret")
        rt.provide("host.Store@1", store, api=api)  # served before the bundles that call it load
        for name in FILTERS:
            rt.load(root / name)
        stages = " -> ".join(p.bundle for p in rt.providers("text.Filter@1"))
        print(f"pipeline on {rt.backend_name}: {stages}")

        for line in ["my password is hunter2", "the s3cret is out", "nothing to hide"]:
            print(f"{line!r} -> {run_pipeline(rt, api, line)!r}")
        with rt.bind(api, "text.Filter@1", bundle="upper") as upper:  # one stage alone
            print(f"upper only: {upper.apply('hunter2')!r}")

        watcher = Watcher({name: root / name for name in FILTERS})
        main_lua = root / "redact" / "main.lua"
        main_lua.write_text(main_lua.read_text("utf-8").replace('"***"', '"[redacted]"'), "utf-8")
        reload_changed(rt, watcher)
        print(f"after the edit: {run_pipeline(rt, api, 'hunter2 again')!r}")
        print("store:", dict(sorted(store.data.items())))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
