"""`make run`: serve the T-VAD Chat page (the page itself is tvad_chat/ui.py; `tvad app` starts the same)."""

from tvad_chat.ui import main

if __name__ == "__main__":
    main()
