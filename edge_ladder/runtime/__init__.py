"""Deploy-time runtime: never imports torch."""
