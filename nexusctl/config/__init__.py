from nexusctl.config.loader import load_config, load_config_text
from nexusctl.config.model import Config

__all__ = ["Config", "load_config", "load_config_text"]
