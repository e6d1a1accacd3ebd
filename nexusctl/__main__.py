from nexusctl.cli.app import main

main()
