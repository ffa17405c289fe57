from edge_vad.cli import main

main()
