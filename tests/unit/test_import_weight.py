"""What each process loads: the mailer and the scheduler start without the web apps' libraries,
and a sender module loads only what it uses. Each check runs in a fresh interpreter, since this
one has loaded everything the other tests needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hookline.senders

WEB = {"flask", "werkzeug"}
# the senders that validate ingress with marshmallow schemas, the fields they share
# (schemas), and the registry, which loads every sender
USE_MARSHMALLOW = {"transactions", "bookings", "schemas", "registry"}
SENDER_MODULES = sorted(path.stem for path in Path(hookline.senders.__file__).parent.glob("*.py")
                        if path.stem != "__init__")

# runs the command up to where it first reaches PostgreSQL: by then it has imported its code
RUN_UNTIL_CONNECTING = """
import sys
from hookline.db import schema

class Reached(BaseException):
    pass

def reached(_settings):
    raise Reached

schema.check_reachable = reached
from hookline.processes.cli import main
try:
    main([sys.argv[1]])
except Reached:
    pass
else:
    sys.exit("the command did not reach its check of PostgreSQL")
"""


def loaded(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter has loaded once it has run `code`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env["HOOKLINE_SMTP_URL"] = "smtp://localhost:25"
    listing = "\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}{listing}", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def packages(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def senders(modules: set[str]) -> set[str]:
    return {name for name in modules if name.startswith("hookline.senders")}


def test_the_mailer_loads_no_web_framework_no_pika_no_marshmallow_and_no_sender() -> None:
    modules = loaded(RUN_UNTIL_CONNECTING, "mail")
    assert "hookline.processes.mailer" in modules
    assert packages(modules) & (WEB | {"marshmallow", "pika"}) == set()
    assert senders(modules) == set()
    assert {name for name in modules if name.startswith("hookline.web")} == set()


def test_the_scheduler_loads_no_web_module_and_only_the_deadlines_sender() -> None:
    modules = loaded(RUN_UNTIL_CONNECTING, "schedule")
    assert "hookline.processes.scheduler" in modules
    assert packages(modules) & (WEB | {"marshmallow"}) == set()
    assert {name for name in modules if name.startswith("hookline.web")} == set()
    assert senders(modules) == {"hookline.senders", "hookline.senders.base",
                                "hookline.senders.deadlines"}


@pytest.mark.parametrize("module", SENDER_MODULES)
def test_a_sender_module_loads_no_web_framework_nor_pika(module: str) -> None:
    modules = loaded(f"import hookline.senders.{module}")
    assert packages(modules) & (WEB | {"pika"}) == set()
    assert {name for name in modules if name.startswith("hookline.web")} == set()
    assert ("marshmallow" in packages(modules)) == (module in USE_MARSHMALLOW)
