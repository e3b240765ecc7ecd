"""
Tests for the twistd plugin: ``twistd p2pstore`` finds the node.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

import p2pstore.tap


class PluginTests(SynchronousTestCase):
    """
    The installed plugin is what ``twistd p2pstore`` runs.
    """

    def plugin(self):
        found = [p for p in getPlugins(IServiceMaker) if p.tapname == "p2pstore"]
        self.assertEqual(len(found), 1, "twistd lists p2pstore exactly once")
        return found[0]

    def test_listed(self):
        """
        twistd's plugin list holds p2pstore, with a description for
        ``twistd --help``.
        """
        plugin = self.plugin()
        self.assertTrue(plugin.description)

    def test_options_and_service(self):
        """
        The plugin's options and service come from p2pstore.tap.
        """
        plugin = self.plugin()
        self.assertIs(plugin.options, p2pstore.tap.Options)
        self.assertIs(plugin.makeService, p2pstore.tap.makeService)
