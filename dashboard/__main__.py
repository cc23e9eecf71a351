"""`python -m dashboard`: serve the dashboard with the settings from the environment."""

from dashboard.app import run

run()
