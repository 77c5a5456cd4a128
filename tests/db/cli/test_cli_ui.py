"""`alz ui`: its command line and its errors (serving the app is tested in test_browser.py)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from alz_db.cli import build_parser, main
from alz_db.cli.ui import APP, read_only_url, streamlit_command

DEAD_URL = "postgresql://postgres@127.0.0.1:1/alz"  # nothing listens on port 1


def test_ui_is_a_command_with_its_options() -> None:
    args = build_parser().parse_args(["ui", "--port", "8600", "--database-url", DEAD_URL])
    assert (args.port, args.address, args.role) == (8600, "127.0.0.1", "alz_reader")
    cmd = streamlit_command(8600, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(APP) and APP.is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"


def test_read_only_url_swaps_the_user() -> None:
    url = read_only_url("postgresql+psycopg://owner:secret@db:5432/alz", "alz_reader", "pw")
    assert url == "postgresql+psycopg://alz_reader:pw@db:5432/alz"
    socket = "postgresql+psycopg://postgres@/alz?host=/tmp/sock"
    url = make_url(read_only_url(socket, "alz_reader", None))
    assert (url.username, url.password, url.database, url.query["host"]) == \
        ("alz_reader", None, "alz", "/tmp/sock")


def test_ui_errors_are_one_line(capsys) -> None:
    assert main(["ui", "--port", "0", "--database-url", DEAD_URL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: alz ui: argument --port: 0 is out of range: expected an integer in "
                   "[1, 65535]"]
    assert main(["ui", "--database-url", DEAD_URL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: database at") and "did not answer" \
        in err[0]
