"""``pantheon iam create-admin|forget-user|shred-forgotten``: an institution's users."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg

from gateway.auth.crypto import load_master_key
from gateway.iam.bootstrap import create_admin
from gateway.iam.service import IamService
from gateway.iam.signing import IamSigner, chain_key_height, load_iam_key
from infra import kafka_acl
from infra.cli_stack import settings_of, unknown_institution
from infra.errors import StackError
from infra.invocation import pantheon
from infra.stack import Stack
from projections.iam_certified import CertifiedSigners
from projections.iam_signers import SignerPolicy
from projections.projector import database_name
from runtime.kafka_config import use_credentials
from runtime.startup import read_genesis


def trusted_signers(institution: str) -> SignerPolicy | None:
    """Whose IAM events the CLI's service believes: None, the certified chain (a seam for
    layouts without a chain, as ``chain_key_height`` is)."""
    del institution
    return None


def _signers(institution: str, genesis_file: Path) -> SignerPolicy:
    """:func:`trusted_signers`, or the chain tables believed only with certificates verified
    from the consortium's genesis (D75)."""
    return trusted_signers(institution) or CertifiedSigners(
        read_genesis(genesis_file), institution=institution
    )


def cmd_create_admin(args: argparse.Namespace) -> int:
    stack = Stack(settings_of(args))
    consortium = stack.consortium
    if args.institution not in consortium.institutions():
        raise ValueError(unknown_institution(args.institution, consortium.institutions()))
    password = os.environ.get("PANTHEON_ADMIN_PASSWORD") or getpass.getpass("password: ")
    dsn = stack.postgres.dsn(database_name(args.institution))
    key = load_iam_key(consortium.iam_key_file(args.institution))
    principal = kafka_acl.institution_principal(args.institution)
    with use_credentials(kafka_acl.credentials(stack.settings, principal)):
        user_id = create_admin(
            bootstrap=stack.settings.bootstrap_servers,
            dsn=dsn,
            institution=args.institution,
            master_key=load_master_key(consortium.master_key_file(args.institution)),
            login=args.login,
            password=password,
            prefix=stack.settings.topic_prefix,
            kek_dir=consortium.master_key_file(args.institution).parent,
            signer=IamSigner(key, chain_key_height(dsn, args.institution, key.key_id)),
            signers=_signers(args.institution, consortium.genesis_file),
        )
    print(f"administrator {args.login} of {args.institution} created (user id {user_id})")
    return 0


def _iam_service(args: argparse.Namespace) -> IamService:
    """The IAM service of ``--institution`` of the local stack (the projector must run)."""
    stack = Stack(settings_of(args))
    consortium = stack.consortium
    if args.institution not in consortium.institutions():
        raise ValueError(unknown_institution(args.institution, consortium.institutions()))
    master_file = consortium.master_key_file(args.institution)
    dsn = stack.postgres.dsn(database_name(args.institution))
    key = load_iam_key(consortium.iam_key_file(args.institution))
    principal = kafka_acl.institution_principal(args.institution)
    # one quick look first: a stopped server is one line now, not 30 s of pool warnings
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5):
        pass
    try:
        with use_credentials(kafka_acl.credentials(stack.settings, principal)):
            return IamService(
                bootstrap=stack.settings.bootstrap_servers,
                dsn=dsn,
                institution=args.institution,
                master_key=load_master_key(master_file),
                prefix=stack.settings.topic_prefix,
                kek_dir=master_file.parent,
                signer=IamSigner(key, chain_key_height(dsn, args.institution, key.key_id)),
                signers=_signers(args.institution, consortium.genesis_file),
            )
    except psycopg.Error as exc:
        raise StackError(f"cannot reach {args.institution}'s database: {exc}".strip()) from None


def _owner(service: IamService) -> str:
    service.view.wait_ready()
    owner = next((p.id for p in service.view.state.principals.values() if p.owner), None)
    if owner is None:
        raise ValueError(
            f"{service.institution} has no administrator yet "
            f"({pantheon('iam', 'create-admin', '--help')})"
        )
    return owner


def cmd_forget_user(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError("forgetting is irreversible: confirm on a terminal or pass --yes")
        answer = input(
            f"Forget user {args.user} of {args.institution}? Their personal data becomes "
            "unreadable for ever. Type the user id to confirm: "
        )
        if answer.strip() != args.user:
            print("not confirmed; nothing changed", file=sys.stderr)
            return 1
    service = _iam_service(args)
    try:
        service.forget_user(_owner(service), args.user)  # with the administrator's authority
    except psycopg.Error as exc:
        raise StackError(f"database error: {exc}".strip()) from None
    finally:
        service.close()
    print(
        f"user {args.user} of {args.institution} forgotten: data key destroyed, "
        "key-encryption key rotated; take a new key backup now (docs/deployment.md)"
    )
    return 0


def cmd_shred_forgotten(args: argparse.Namespace) -> int:
    service = _iam_service(args)
    try:
        gone = service.shred_forgotten()
    except psycopg.Error as exc:
        raise StackError(f"database error: {exc}".strip()) from None
    finally:
        service.close()
    print(f"{len(gone)} forgotten user(s) still had a data key; destroyed: {' '.join(gone)}")
    return 0


def add_iam(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
) -> None:
    """``pantheon iam``: an institution's users (off-chain)."""
    iam = sub.add_parser("iam", help="institutions' users (off-chain)")
    iam_verbs = iam.add_subparsers(dest="verb", required=True, metavar="<verb>")
    admin = add(
        iam_verbs,
        "create-admin",
        cmd_create_admin,
        "create an institution's first administrator (password from PANTHEON_ADMIN_PASSWORD "
        "or a prompt)",
    )
    admin.add_argument("--institution", required=True, help="institution id")
    admin.add_argument("--login", required=True, help="the administrator's login")
    forget = add(
        iam_verbs,
        "forget-user",
        cmd_forget_user,
        "crypto-shred a user (irreversible): destroy their data key and rotate the "
        "key-encryption key, then record UserForgotten",
    )
    forget.add_argument("--institution", required=True, help="institution id")
    forget.add_argument("--user", required=True, help="the user id to forget")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    shred = add(
        iam_verbs,
        "shred-forgotten",
        cmd_shred_forgotten,
        "after restoring a database dump: destroy the data keys of users the IAM topic says "
        "are forgotten (run once the projector has caught up)",
    )
    shred.add_argument("--institution", required=True, help="institution id")
