"""Print the recipe table as Markdown: python -m cvx2_backbone.recipes."""
from . import render_markdown

print(render_markdown(), end="")
