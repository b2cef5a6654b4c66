from sonia.cli import main

main()
