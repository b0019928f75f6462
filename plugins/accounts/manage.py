"""`python -m plugins.accounts.manage`: the operator's command for accounts the public API
does not make (hosts, moderators, admins) and for password resets. It writes the same SQLite
file the running server reads (`[server] data_dir`/accounts/accounts.sqlite); the password is
read from standard input, never from the command line (it would show in `ps`)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from mediacore.plugins.api import IdentityError, Role

from . import limits
from .passwords import hash_password
from .plugin import USERNAME
from .settings import AccountsSettings
from .store import UserExists, UserStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.accounts.manage", description=__doc__)
    parser.add_argument("--data-dir", default="data", help="the server's [server] data_dir (default: data)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create a user with a role")
    add.add_argument("username")
    add.add_argument("--role", default="viewer", help="viewer, moderator, host or admin")
    role = sub.add_parser("role", help="change a user's role")
    role.add_argument("username")
    role.add_argument("role")
    password = sub.add_parser("password", help="set a user's password")
    password.add_argument("username")
    args = parser.parse_args(argv)
    if not USERNAME.fullmatch(args.username):
        parser.error(f"a username is {limits.MIN_USERNAME} to {limits.MAX_USERNAME} letters, digits, '_', '.' or '-'")
    directory = Path(args.data_dir) / "accounts"
    directory.mkdir(parents=True, exist_ok=True)
    store = UserStore(directory / "accounts.sqlite")
    cost = AccountsSettings().cost
    try:
        if args.command == "role":
            if not store.set_role(args.username, Role.parse(args.role)):
                print(f"no user {args.username!r}", file=sys.stderr)
                return 1
            return 0
        text = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not limits.MIN_PASSWORD <= len(text) <= limits.MAX_PASSWORD:
            print(f"a password is {limits.MIN_PASSWORD} to {limits.MAX_PASSWORD} characters", file=sys.stderr)
            return 2
        if args.command == "add":
            store.add(args.username, hash_password(text, cost), Role.parse(args.role), time.time())
        elif not store.set_password(args.username, hash_password(text, cost)):
            print(f"no user {args.username!r}", file=sys.stderr)
            return 1
        return 0
    except (UserExists, IdentityError) as e:
        print(f"refused: {e!r}", file=sys.stderr)
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
