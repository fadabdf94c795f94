"""The published package works in a new project set up as docs/installation.rst says.

Builds the wheel, installs it (and what it pulls from PyPI) into a fresh
virtualenv, starts a project with ``django-admin startproject``, makes the
changes the installation page lists, and checks what a new user would: the
checks pass, ``migrate`` creates the permissions, responses carry the headers,
and the admin pages open for a superuser.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path) -> str:
    # A new user's shell: not this test run's settings module.
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def install_documented_changes(site: Path) -> None:
    """The edits docs/installation.rst asks for, made to a fresh project."""
    settings = site / "mysite" / "settings.py"
    text = settings.read_text()
    # After the last app; right after SecurityMiddleware (either quote style).
    text, apps = re.subn(
        r"""(\n(\s+)(['"])django\.contrib\.staticfiles\3,\n)""",
        r"\1\2\3querylens\3,\n",
        text,
    )
    text, middleware = re.subn(
        r"""(\n(\s+)(['"])django\.middleware\.security\.SecurityMiddleware\3,\n)""",
        r"\1\2\3querylens.middleware.QueryLensMiddleware\3,\n",
        text,
    )
    assert (apps, middleware) == (1, 1), "startproject's settings changed shape"
    settings.write_text(text)
    urls = site / "mysite" / "urls.py"
    text = urls.read_text()
    text = text.replace("from django.urls import path", "from django.urls import include, path")
    text, included = re.subn(
        r"""(\n(\s+)path\((['"])admin/\3, admin\.site\.urls\),)""",
        r"\n\2path(\3admin/querylens/\3, include(\3querylens.urls\3)),\1",
        text,
    )
    assert included == 1, "startproject's urls changed shape"
    urls.write_text(text)


VISIT = """
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
User.objects.create_superuser("admin", "admin@example.com", "admin")
client = Client()
login = client.get("/admin/login/")
print("login", login.status_code, login.get("X-QueryLens-Queries"))
client.force_login(User.objects.get(username="admin"))
for url in ["/admin/", "/admin/querylens/", "/admin/querylens/requests/"]:
    print("page", url, client.get(url).status_code)
record_id = client.get("/admin/").get("X-QueryLens-Request")
exported = client.get(f"/admin/querylens/requests/{record_id}/?format=json").json()
print("json", exported["path"], exported["query_count"])
"""


def test_the_wheel_installs_and_works_in_a_new_project(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT, cwd=tmp_path)
    (wheel,) = wheels.glob("querylens_profiler-*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    metadata = run(
        python,
        "-c",
        "from importlib.metadata import metadata, version; import querylens; "
        "m = metadata('querylens-profiler'); "
        "print(m['License-Expression'], version('querylens-profiler') == querylens.__version__)",
        cwd=tmp_path,
    )
    assert metadata.split() == ["BSD-3-Clause", "True"]

    site = tmp_path / "project"
    site.mkdir()
    run(env / "bin" / "django-admin", "startproject", "mysite", site, cwd=tmp_path)
    install_documented_changes(site)
    manage = site / "manage.py"
    checked = run(python, manage, "check", cwd=site)
    assert "System check identified no issues" in checked
    migrated = run(python, manage, "migrate", "--noinput", cwd=site)
    assert "Applying querylens.0002_permissions... OK" in migrated
    out = run(python, manage, "shell", "-c", VISIT, cwd=site)
    # DEBUG is on in a new project, so even the anonymous login page carries
    # the headers (the pattern needs a number where X-QueryLens-Queries goes).
    login = re.search(r"^login (\d+) (\d+)$", out, re.M)
    assert login is not None, out
    assert login.group(1) == "200"
    for url in ["/admin/", "/admin/querylens/", "/admin/querylens/requests/"]:
        assert f"page {url} 200" in out
    assert re.search(r"^json /admin/ [1-9]\d*$", out, re.M), out
