import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, IThemeManager } from '@jupyterlab/apputils';

import { Actions } from './actions';
import { ModelDeployClient } from './api';
import { addCommands } from './commands';
import { deploymentsIcon } from './icons';
import { DeploymentsModel } from './model';
import { DeploymentsPanel } from './panel';

/**
 * The "Model Deployments" sidebar. It requires ILabShell, so it cannot run in Voilà
 * (which loads Lab extensions but has no Lab shell).
 */
const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-modeldeploy:panel',
  description: 'A sidebar panel to launch, watch and manage model deployments.',
  // Started by `starter`: an auto-started plugin with a missing requirement is an
  // error in the browser console of every Voilà dashboard.
  autoStart: false,
  requires: [ILabShell],
  optional: [ICommandPalette, ILayoutRestorer, IThemeManager],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    themes: IThemeManager | null
  ) => {
    const model = new DeploymentsModel(new ModelDeployClient(app.serviceManager.serverSettings));
    const panelId = 'jupyter-modeldeploy-panel';
    const actions = new Actions(shell, model, panelId, themes);
    const panel = new DeploymentsPanel(model, actions);
    panel.title.icon = deploymentsIcon;
    shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, panelId);
    addCommands(app.commands, shell, panelId, actions, model, palette);
  }
};

/** Starts the panel where there is a Lab shell, and does nothing elsewhere (Voilà). */
const starter: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-modeldeploy:start',
  description: 'Starts the Model Deployments panel in JupyterLab.',
  autoStart: true,
  optional: [ILabShell],
  activate: async (app: JupyterFrontEnd, shell: ILabShell | null) => {
    if (shell) {
      await app.activatePlugin(panelPlugin.id);
    }
  }
};

export default [starter, panelPlugin];
