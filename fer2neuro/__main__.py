from fer2neuro.cli import main

main(prog_name="fer2neuro")
