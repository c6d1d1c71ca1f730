"""The web explorer: server-rendered pages (Jinja2 templates) and the vendored scripts and styles they use."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def explorer_templates() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 templates with autoescaping on (every value a page shows came from somebody's event)."""
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(environment))


def explorer_static() -> Router:
    """The vendored stylesheet and scripts, served by the app itself under /ui/static (no CDN)."""
    return create_static_files_router(
        path="/ui/static", directories=[STATIC], include_in_schema=False, name="explorer-static"
    )
