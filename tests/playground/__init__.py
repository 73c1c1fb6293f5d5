"""The bot driven through the Microsoft 365 Agents Playground in headless Chromium."""
