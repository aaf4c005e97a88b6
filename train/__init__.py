"""Everything with a model in it, one floor a subpackage, each importing only the floors below it: cli > recipes >
serving | training > evaluation > ranking > artifact > config, over crosstune.data (pyproject.toml's import-linter
contract says so)."""
