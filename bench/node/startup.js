// startup: an empty script.
