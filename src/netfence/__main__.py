from netfence.cli import main

main()
