"""The browser tests find a Chromium either way: Debian's at /usr/bin/chromium, else Playwright's own build."""

from pathlib import Path

from test_serve_browser import chromium_executable


def test_debians_chromium_when_installed_else_playwrights_own(tmp_path):
    debian = tmp_path / "chromium"
    assert chromium_executable(debian) is None  # Playwright then launches the build it downloaded
    debian.touch()
    assert chromium_executable(debian) == str(debian)
    assert chromium_executable(Path("/usr/bin/chromium")) in (None, "/usr/bin/chromium")
