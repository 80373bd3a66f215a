from schedlab.cli import main

main()
