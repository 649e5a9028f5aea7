from .app import main

# Guarded: worker processes are spawned, and spawning imports this module again.
if __name__ == "__main__":
    main()
