"""Print the recipe table as Markdown: python -m tests.recipes."""
from tests.recipes import render_markdown

print(render_markdown(), end="")
