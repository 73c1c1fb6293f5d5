"""The Teams app package: manifest template, localization files, icons and their builder."""
