"""The tests import the project's modules from the repository's root folder (REPO), and run its
scripts there, as a user does: `python -m pytest -q` in the root, or `pytest` anywhere in it."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
