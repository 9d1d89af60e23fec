"""The command tree of `chatbus`: every command and group, and the module that implements it."""

from __future__ import annotations

import typer

from services.cli import (
    admin_arena,
    admin_audit,
    admin_bots,
    admin_export,
    admin_images,
    admin_import,
    admin_nats,
    admin_replay,
    admin_setup,
    admin_users,
    batches,
    conductor,
    run,
    up,
    webhooks,
)
from services.cli.batch import batch_app
from services.cli.chat_client.command import chat

app = typer.Typer(
    help="chatbus: self-hosted chatbots over an event log (NATS JetStream).", no_args_is_help=True
)
app.command("projector")(run.projector)
app.command("api")(run.api)
app.command("worker")(run.worker)
app.command("image-store")(run.image_store)
app.command("conductor")(conductor.conductor)
app.command("webhooks")(webhooks.webhooks)
app.command("batches")(batches.batches)
app.command("up")(up.up)
app.command("chat")(chat)
app.add_typer(batch_app, name="batch")

admin = typer.Typer(help="Administer users, keys, models and the read model.", no_args_is_help=True)
app.add_typer(admin, name="admin")
admin.command("init")(admin_setup.admin_init)
admin.command("make-demo-model")(admin_setup.admin_make_demo_model)
admin.command("replay")(admin_replay.admin_replay)
admin.command("import")(admin_import.admin_import)
admin.command("worker-user")(admin_nats.admin_worker_user)

export_app = typer.Typer(help="Export training data and chats from the log.", no_args_is_help=True)
admin.add_typer(export_app, name="export")
export_app.command("sft")(admin_export.export_sft)
export_app.command("preferences")(admin_export.export_preferences)
export_app.command("chats")(admin_export.export_chats)

audit_app = typer.Typer(help="Read the log's record of what happened.", no_args_is_help=True)
admin.add_typer(audit_app, name="audit")
audit_app.command("chat")(admin_audit.audit_chat)

user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
admin.add_typer(user_app, name="user")
user_app.command("add")(admin_users.user_add)
user_app.command("password")(admin_users.user_password)
user_app.command("erase")(admin_users.user_erase)
user_app.command("unlock")(admin_users.user_unlock)

images_app = typer.Typer(help="Look after stored images.", no_args_is_help=True)
admin.add_typer(images_app, name="images")
images_app.command("collect")(admin_images.images_collect)

key_app = typer.Typer(help="Issue and revoke API keys.", no_args_is_help=True)
admin.add_typer(key_app, name="key")
key_app.command("issue")(admin_users.key_issue)
key_app.command("revoke")(admin_users.key_revoke)

bot_app = typer.Typer(
    help="Manage bots (personas): add, list, show, export, import, delete.", no_args_is_help=True
)
admin.add_typer(bot_app, name="bot")
bot_app.command("add")(admin_bots.bot_add)
bot_app.command("list")(admin_bots.bot_list)
bot_app.command("show")(admin_bots.bot_show)
bot_app.command("export")(admin_bots.bot_export)
bot_app.command("import")(admin_bots.bot_import)
bot_app.command("delete")(admin_bots.bot_delete)

arena_app = typer.Typer(
    help="The arena: its leaderboard, the counted votes, the pool of models, excluded voters.",
    no_args_is_help=True,
)
admin.add_typer(arena_app, name="arena")
arena_app.command("leaderboard")(admin_arena.arena_leaderboard)
arena_app.command("votes")(admin_arena.arena_votes)
arena_app.command("pool")(admin_arena.arena_pool)
arena_app.command("exclude")(admin_arena.arena_exclude)
arena_app.command("include")(admin_arena.arena_include)
