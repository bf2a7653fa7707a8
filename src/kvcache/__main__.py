from kvcache.cli.main import main

main()
